//! One forward_backward call, many requests: splitting datums into chunks (protocol.md 11.1)
//! and folding the chunks' results back into one (11.2).
//!
//! ```
//! use tinker_core::batching::{plan_chunks, ChunkLimits};
//! use tinker_core::proto::{encode_forward_backward, ForwardBackwardRequestRef};
//! use tinker_core::types::{Datum, LossFn, ModelInput};
//!
//! let data: Vec<Datum> = (0..3).map(|i| Datum::new(ModelInput::from_tokens(vec![i; 4]))).collect();
//! let chunks = plan_chunks(&data, ChunkLimits { max_datums: 2, ..ChunkLimits::default() }).unwrap();
//! let mut body = Vec::new();
//! for (i, chunk) in chunks.iter().enumerate() {
//!     body.clear();
//!     let seq_id = 1 + i as i32; // reserved for the whole call before anything is sent
//!     let request = ForwardBackwardRequestRef::new("s:train:0", seq_id, &data[chunk.range.clone()], LossFn::CrossEntropy);
//!     encode_forward_backward(&request, &mut body).unwrap();
//! }
//! assert_eq!(chunks.len(), 2);
//! ```

mod chunking;
mod combine;

pub use chunking::{plan_chunks, ChunkLimits, DatumChunk};
pub use combine::{combine_forward_backward_outputs, reduce_metrics};
