#!/usr/bin/env python3
"""Turns a GPU benchmark run (scripts/gpu/bench.sh output folder) into the Markdown table of
docs/benchmarks.md and a PNG plot of throughput against batch size.

  python3 tools/bench_report.py DIR [--png docs/vit_b32_throughput.png]

DIR holds vit_*.json (rusttrt bench --json) and reference.json (tools/vit_reference.py bench).
ViT-B/32 costs 8.8 GFLOP per image; the "peak" column is img/s x 8.8 GFLOP over the measured FP16
peak of the same run, taken as the best PyTorch CUDA-graph FP16 throughput (the best any runtime
reached on that GPU in that run).
"""
import argparse, glob, json, os

GFLOP = 8.8


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--png")
    a = p.parse_args()
    ref = json.load(open(os.path.join(a.dir, "reference.json")))
    runs = {}
    for f in sorted(glob.glob(os.path.join(a.dir, "vit_*.json"))):
        d = json.load(open(f))
        runs[d["model"]] = d
    peak = max(v["img_per_s"] for k, v in ref.items() if k.startswith("torch_cudagraph_fp16"))
    rows = []
    print(f"GPU: {ref['device']}; torch {ref['torch']}; onnxruntime {ref.get('onnxruntime', '-')}")
    print("| model | input memory | batch | img/s | p50 ms | p99 ms | backend exec ms | direct engine ms | overhead | vs ORT CUDA (Python) | vs PyTorch CUDA graph FP16 | of measured FP16 peak |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in runs.items():
        prec = "fp32" if "fp32" in name else "fp16"
        for r in d["rows"]:
            b = r["batch"]
            ort = ref.get(f"ort_cuda_{prec}_bs{b}", {}).get("img_per_s")
            pt = ref.get(f"torch_cudagraph_fp16_bs{b}", {}).get("img_per_s")
            ov = r.get("overhead")
            print(f"| {name} | {r['input_memory']} | {b} | {r['img_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                  f"{r['server_exec_ms']:.2f} | {r['direct_ms']:.2f} | {ov * 100:+.1f}% | "
                  f"{r['img_per_s'] / ort:.2f}x | {r['img_per_s'] / pt:.2f}x | {r['img_per_s'] / peak * 100:.0f}% |")
            rows.append((name, r["input_memory"], b, r["img_per_s"]))
    print()
    print(f"Measured FP16 peak (best PyTorch CUDA-graph FP16): {peak:.0f} img/s = {peak * GFLOP / 1e3:.0f} TFLOP/s at {GFLOP} GFLOP/image.")
    for k in sorted(k for k in ref if "_bs" in k):
        v = ref[k]
        print(f"- {k}: {v['ms']:.3f} ms, {v['img_per_s']:.0f} img/s")
    if a.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(8, 5))
        for name in runs:
            for mem in ("Gpu",):
                pts = [(b, v) for (n, m, b, v) in rows if n == name and m == mem]
                ax.plot([b for b, _ in pts], [v for _, v in pts], marker="o", label=f"rusttrt {name} (inputs in GPU memory)")
        for key, label in [("ort_cuda_fp16", "ONNX Runtime CUDA FP16 (Python, IoBinding)"),
                           ("ort_cuda_fp32", "ONNX Runtime CUDA FP32 (Python, IoBinding)"),
                           ("torch_cudagraph_fp16", "PyTorch CUDA graph FP16")]:
            pts = sorted((v["batch"], v["img_per_s"]) for k, v in ref.items() if k.startswith(key + "_bs"))
            ax.plot([b for b, _ in pts], [v for _, v in pts], linestyle="--", marker="x", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title(f"ViT-B/32 image encoder on {ref['device']}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(a.png, dpi=110)


if __name__ == "__main__":
    main()
