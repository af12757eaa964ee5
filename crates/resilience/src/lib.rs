//! Tower layers for calling dependencies that fail. (Crate docs: see issue; to be written.)

pub mod client;
