//! The shared library exports only `TRITONBACKEND_*` entry points (no clash with the other
//! backends Triton loads into the same process) and leaves the server functions undefined.

mod common;

#[test]
fn only_tritonbackend_symbols_are_exported() {
    let lib = common::backend_lib();
    let out = std::process::Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&lib)
        .output()
        .expect("nm (binutils) is needed for this test");
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let exported: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
            // Code and data symbols; weak/absolute loader symbols are not ours.
            matches!(kind, "T" | "D" | "B" | "R").then_some(name)
        })
        .collect();
    let foreign: Vec<&&str> = exported
        .iter()
        .filter(|n| !n.starts_with("TRITONBACKEND_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "exported symbols besides TRITONBACKEND_*: {foreign:?}"
    );
    for entry in triton_abi::BACKEND_ENTRY_POINTS {
        assert!(exported.contains(entry), "{entry} is not exported");
    }
    // The server-side functions are imports, resolved from the process (libtritonserver.so).
    let undef = std::process::Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(&lib)
        .output()
        .unwrap();
    let undef = String::from_utf8_lossy(&undef.stdout);
    for f in [
        "TRITONSERVER_ErrorNew",
        "TRITONBACKEND_ResponseSend",
        "TRITONBACKEND_RequestRelease",
    ] {
        assert!(undef.contains(f), "{f} should be an undefined import");
    }
}
