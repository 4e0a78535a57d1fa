//! placeholder (the trt branch replaces it)
use crate::backend::BackendState;
use crate::engine::EngineFactory;
use crate::error::{Error, Result};
pub fn compiled_in() -> bool {
    false
}
pub fn factory(_b: &BackendState) -> Result<Box<dyn EngineFactory>> {
    Err(Error::unsupported(
        "rusttrt was built without TensorRT headers",
    ))
}
