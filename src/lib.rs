//! triton-rusttrt: a Triton Inference Server backend that serves ONNX models through engines it
//! builds itself (TensorRT, or ONNX Runtime), kept in an on-disk engine cache.
//!
//! Layers, top to bottom (each calls only the ones below it):
//!
//! | module | role |
//! |---|---|
//! | [`backend::api`] | the exported `TRITONBACKEND_*` entry points: catch panics, map errors |
//! | [`backend`] | model / instance state, config, auto-complete, execute (gather, run, scatter) |
//! | [`triton`] | safe owners of Triton's C objects (ownership rules in one place) |
//! | [`ffi`] | raw C declarations of the server-side functions |
//! | [`engine`] | ONNX Runtime and TensorRT engines: build, load, run |
//! | [`cache`] | engine cache: keys, atomic store, locks, verification, eviction |
//! | [`onnx`] | ONNX reading, I/O signature, model hashing, FP16 conversion |
//! | [`safe_file`] | opening files that may be planted: regular files only, never blocking, bounded, inside their directory |
//! | [`cuda`] | devices, streams, device and pinned buffers (loaded at run time) |

pub mod error;
pub mod types;

pub mod ffi;
pub mod triton;

pub mod backend;

pub mod cache;
pub mod compare;
pub mod cuda;
pub mod engine;
pub mod onnx;
pub mod safe_file;

pub use error::{Error, ErrorCode, Result};
