//! Tower middleware that makes Server-Sent Events streams resumable and
//! duplicate-free behind any HTTP service.

pub mod framer;
