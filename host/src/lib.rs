//! A stand-in for Triton core that loads a backend shared library exactly as Triton does and
//! checks that the backend follows Triton's rules (see `docs/triton-backend-abi.md`).
//!
//! * [`Server`] loads `libtriton_<name>.so` (`dlopen(RTLD_NOW|RTLD_LOCAL)`), builds the model
//!   configuration from a model repository, calls the backend's entry points in Triton's order
//!   and schedules requests (default scheduler or dynamic batcher, one thread per instance).
//! * The host exports every `TRITONSERVER_*` / `TRITONBACKEND_*` function a backend imports
//!   ([`abi`]); executables using it must link with `-rdynamic` (host/build.rs does this for
//!   the `rusttrt` binary and the host's tests; the root build.rs for the root's tests).
//! * Rule violations (double release, missing response, stats after release, ...) are recorded
//!   ([`Server::violations`]) and turn the affected request's result into an error.

pub mod abi;
mod backend_lib;
pub mod cli;
pub mod config;
mod cuda_memory;
pub mod error;
mod handles;
pub mod infer;
pub mod memory;
mod objects;
mod rules;
mod scheduler;
pub mod server;
pub mod stats;
pub mod testing;

pub use config::PreferredGroup;
pub use error::{Error, Result};
pub use infer::{Chunk, InferRequest, InferResponse, InputTensor, OutputTensor};
pub use memory::{DeviceMemory, MemoryType};
pub use rules::LogLine;
pub use server::{PreparedRequest, ResponseHandle, Server, ServerOptions};
