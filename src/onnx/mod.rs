//! placeholder (the onnx branch replaces it)
use crate::engine::Signature;
use crate::error::{Error, Result};
use std::path::Path;
pub struct OnnxModel;
impl OnnxModel {
    pub fn load(_p: &Path) -> Result<Self> {
        Err(Error::internal("onnx module not merged"))
    }
    pub fn signature(&self) -> Result<Signature> {
        Err(Error::internal("onnx module not merged"))
    }
}
