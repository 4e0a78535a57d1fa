//! Placeholder until the host lands.
#[test]
fn data_types_are_named() {
    assert_eq!(triton_rusttrt::types::DataType::F32.protocol_name(), "FP32");
}
