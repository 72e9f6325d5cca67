//! End-to-end tests of bge-m3-server over HTTP. One server per test binary, on the tiny-pt
//! fixture model behind a real listener on an OS-assigned port; every vector and score is
//! compared with bge-m3-core's on the same model within 1e-5.

#![forbid(unsafe_code)]

mod common;
mod embeddings_native;
mod embeddings_openai;
mod errors;
mod info;
mod lifecycle;
mod policy;
mod process;
mod reliability;
mod rerank;
mod score;
mod security;
mod shutdown;
mod tei;
