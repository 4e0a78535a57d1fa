//! placeholder (the cuda branch replaces it)
use crate::error::{Error, Result};
pub struct DeviceInfo;
impl DeviceInfo {
    pub fn cache_identity(&self) -> String {
        String::new()
    }
}
pub fn device_identity(ordinal: i32) -> Result<DeviceInfo> {
    Err(Error::unavailable(format!(
        "no CUDA support yet for device {ordinal}"
    )))
}
pub fn copy_device_to_host_vec(
    _dst: &mut Vec<u8>,
    _src: *const u8,
    _len: usize,
    dev: i64,
) -> Result<()> {
    Err(Error::unavailable(format!(
        "GPU memory on device {dev} needs CUDA"
    )))
}
pub fn copy_host_to_device_raw(_dst: *mut u8, _src: &[u8], dev: i64) -> Result<()> {
    Err(Error::unavailable(format!(
        "GPU memory on device {dev} needs CUDA"
    )))
}
