//! `ModelInput`: the token sequence a model reads, as a list of chunks (protocol.md 9.1).
//!
//! Text is token ids; images travel as raw bytes (base64 in JSON) or as a pointer to a stored
//! image; audio travels as an opaque "dmel" tensor container. Token ids are `i32` because the
//! protobuf packs them as little-endian int32.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A token id, as packed on the wire (int32).
pub type TokenId = i32;

/// Image encodings the service accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
}

impl ImageFormat {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        }
    }

    /// Parses a wire name.
    pub fn from_name(s: &str) -> Option<ImageFormat> {
        match s {
            "png" => Some(ImageFormat::Png),
            "jpeg" => Some(ImageFormat::Jpeg),
            _ => None,
        }
    }
}

/// One chunk of a [`ModelInput`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Chunk {
    /// Token ids of text.
    EncodedText {
        /// The token ids.
        tokens: Vec<TokenId>,
    },
    /// An image, sent inline.
    Image {
        /// The raw image bytes (base64 with padding in JSON).
        #[serde(with = "crate::types::base64_bytes")]
        data: Bytes,
        /// PNG or JPEG.
        format: ImageFormat,
        /// How many tokens the image occupies (required to know the input's length).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_tokens: Option<u32>,
    },
    /// An image the service fetches from storage. Cannot be used in forward_backward.
    ImageAssetPointer {
        /// PNG or JPEG.
        format: ImageFormat,
        /// Where the image is (path or URL).
        location: String,
        /// How many tokens the image occupies.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_tokens: Option<u32>,
    },
    /// Audio as an opaque DMel tensor container.
    Dmel {
        /// The serialized TensorContainer (base64 with padding in JSON).
        #[serde(with = "crate::types::base64_bytes")]
        dmel: Bytes,
    },
}

impl Chunk {
    /// A text chunk.
    pub fn tokens(tokens: impl Into<Vec<TokenId>>) -> Chunk {
        Chunk::EncodedText {
            tokens: tokens.into(),
        }
    }

    /// The number of model positions this chunk occupies.
    pub fn length(&self) -> Result<usize> {
        match self {
            Chunk::EncodedText { tokens } => Ok(tokens.len()),
            Chunk::Image {
                expected_tokens, ..
            }
            | Chunk::ImageAssetPointer {
                expected_tokens, ..
            } => expected_tokens.map(|n| n as usize).ok_or_else(|| {
                Error::invalid(
                    "image chunk",
                    "expected_tokens must be set to know the image's token length",
                )
            }),
            Chunk::Dmel { dmel } => dmel_length(dmel),
        }
    }

    /// Bytes this chunk adds to the forward_backward size estimate (protocol.md 10.2).
    pub fn estimated_proto_bytes(&self) -> usize {
        match self {
            Chunk::EncodedText { tokens } => 4 * tokens.len(),
            Chunk::Image { data, .. } => data.len(),
            Chunk::ImageAssetPointer { location, .. } => location.len(),
            Chunk::Dmel { dmel } => dmel.len(),
        }
    }

    /// Bytes this chunk adds to the sampling dispatch estimate (protocol.md 8.5).
    pub fn estimated_sample_bytes(&self) -> usize {
        match self {
            Chunk::EncodedText { tokens } => 10 * tokens.len(),
            other => other.estimated_proto_bytes(),
        }
    }
}

/// Length (dimension 0) of a DMel TensorContainer: optional 0xFE marker, a dtype byte (0..=7),
/// a LEB128 `ndim`, then `ndim` LEB128 dimensions.
fn dmel_length(bytes: &[u8]) -> Result<usize> {
    let bad = |m: &str| {
        Error::invalid(
            "dmel chunk",
            format!("malformed TensorContainer header: {m}"),
        )
    };
    let mut pos = 0;
    if bytes.first() == Some(&0xFE) {
        pos += 1;
    }
    let dtype = *bytes.get(pos).ok_or_else(|| bad("missing dtype byte"))?;
    if dtype > 7 {
        return Err(bad("dtype byte out of range"));
    }
    pos += 1;
    let read_varint = |pos: &mut usize| -> Result<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*pos).ok_or_else(|| bad("truncated varint"))?;
            *pos += 1;
            value |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(bad("varint too long"))
    };
    let ndim = read_varint(&mut pos)?;
    if ndim == 0 {
        return Err(bad("a DMel tensor needs at least one dimension"));
    }
    let first = read_varint(&mut pos)?;
    usize::try_from(first).map_err(|_| bad("dimension too large"))
}

/// The input a model reads: an ordered list of chunks.
///
/// ```
/// use tinker_core::types::ModelInput;
/// let input = ModelInput::from_tokens(vec![1, 2, 3]).append_tokens([4, 5]);
/// assert_eq!(input.length().unwrap(), 5);
/// assert_eq!(input.to_tokens().unwrap(), vec![1, 2, 3, 4, 5]);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelInput {
    /// The chunks, in order.
    pub chunks: Vec<Chunk>,
}

impl ModelInput {
    /// An input of one text chunk.
    pub fn from_tokens(tokens: impl Into<Vec<TokenId>>) -> ModelInput {
        ModelInput {
            chunks: vec![Chunk::tokens(tokens)],
        }
    }

    /// An input made of the given chunks.
    pub fn from_chunks(chunks: Vec<Chunk>) -> ModelInput {
        ModelInput { chunks }
    }

    /// Appends a chunk.
    pub fn append(mut self, chunk: Chunk) -> ModelInput {
        self.chunks.push(chunk);
        self
    }

    /// Appends tokens, extending the last chunk when it is text.
    pub fn append_tokens(mut self, tokens: impl IntoIterator<Item = TokenId>) -> ModelInput {
        match self.chunks.last_mut() {
            Some(Chunk::EncodedText { tokens: last }) => last.extend(tokens),
            _ => self
                .chunks
                .push(Chunk::tokens(tokens.into_iter().collect::<Vec<_>>())),
        }
        self
    }

    /// Total number of model positions.
    pub fn length(&self) -> Result<usize> {
        self.chunks.iter().map(Chunk::length).sum()
    }

    /// All token ids, when every chunk is text.
    pub fn to_tokens(&self) -> Result<Vec<TokenId>> {
        let mut out = Vec::new();
        for (i, c) in self.chunks.iter().enumerate() {
            match c {
                Chunk::EncodedText { tokens } => out.extend_from_slice(tokens),
                _ => {
                    return Err(Error::invalid(
                        format!("model_input.chunks[{i}]"),
                        "not a text chunk",
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Bytes this input adds to the forward_backward size estimate (protocol.md 10.2).
    pub fn estimated_proto_bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::estimated_proto_bytes).sum()
    }

    /// Bytes this prompt counts against the sampling dispatch budget (protocol.md 8.5).
    pub fn estimated_sample_bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::estimated_sample_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chunks_serialize_with_type_tags_and_base64() {
        let input = ModelInput::from_chunks(vec![
            Chunk::tokens(vec![1, 2, 3]),
            Chunk::Image {
                data: Bytes::from_static(b"PNG.."),
                format: ImageFormat::Png,
                expected_tokens: Some(256),
            },
            Chunk::ImageAssetPointer {
                format: ImageFormat::Jpeg,
                location: "gs://bucket/img.jpg".into(),
                expected_tokens: Some(64),
            },
            Chunk::Dmel {
                dmel: Bytes::from_static(&[0, 2, 5, 3, 0x61, 0x62, 0x63]),
            },
        ]);
        let v = serde_json::to_value(&input).unwrap();
        // The protocol's example (9.1), generated by the official SDK's serializer.
        assert_eq!(
            v,
            json!({"chunks": [
                {"tokens": [1, 2, 3], "type": "encoded_text"},
                {"data": "UE5HLi4=", "format": "png", "expected_tokens": 256, "type": "image"},
                {"format": "jpeg", "location": "gs://bucket/img.jpg", "expected_tokens": 64, "type": "image_asset_pointer"},
                {"dmel": "AAIFA2FiYw==", "type": "dmel"}
            ]})
        );
        let back: ModelInput = serde_json::from_value(v).unwrap();
        assert_eq!(back, input);
        // dmel header: dtype 0, ndim 2, shape [5, 3] -> 5 positions.
        assert_eq!(input.length().unwrap(), 3 + 256 + 64 + 5);
    }

    #[test]
    fn an_image_without_expected_tokens_has_no_length() {
        let input = ModelInput::from_chunks(vec![Chunk::Image {
            data: Bytes::from_static(b"x"),
            format: ImageFormat::Png,
            expected_tokens: None,
        }]);
        assert!(input
            .length()
            .unwrap_err()
            .to_string()
            .contains("expected_tokens"));
    }

    #[test]
    fn malformed_dmel_headers_are_errors_not_panics() {
        for bytes in [
            &[][..],
            &[0xFE][..],
            &[9, 1, 1][..],
            &[0, 1][..],
            &[0, 0][..],
            &[0, 1, 0x80][..],
        ] {
            let c = Chunk::Dmel {
                dmel: Bytes::copy_from_slice(bytes),
            };
            assert!(c.length().is_err(), "{bytes:?}");
        }
        let marked = Chunk::Dmel {
            dmel: Bytes::from_static(&[0xFE, 1, 1, 0x80, 0x01]),
        };
        assert_eq!(marked.length().unwrap(), 128);
    }
}
