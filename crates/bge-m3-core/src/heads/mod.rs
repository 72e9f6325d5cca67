//! The three BGE-M3 output heads, applied to the encoder's last hidden state (in f32).

pub mod colbert;
pub mod dense;
pub mod sparse;

pub use colbert::ColbertHead;
pub use sparse::{SparseEmbedding, SparseHead};
