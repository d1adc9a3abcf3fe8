//! The toy model's trivial "byte tokenizer": token id `t < 256` is the byte `t`; ids ≥ 256 are
//! special tokens with no text (they decode to nothing). Used for stop strings and by tests and
//! examples that want readable text.

use tinker_core::types::TokenId;

/// Token ids of a string's UTF-8 bytes.
pub fn encode(text: &str) -> Vec<TokenId> {
    text.bytes().map(TokenId::from).collect()
}

/// The bytes of a token sequence (special tokens contribute nothing).
pub fn decode_bytes(tokens: &[TokenId]) -> Vec<u8> {
    tokens.iter().filter_map(|&t| token_byte(t)).collect()
}

/// The byte of one token, if it is a byte token.
pub fn token_byte(token: TokenId) -> Option<u8> {
    u8::try_from(token).ok()
}

/// The text of a token sequence, invalid UTF-8 replaced by U+FFFD.
pub fn decode(tokens: &[TokenId]) -> String {
    String::from_utf8_lossy(&decode_bytes(tokens)).into_owned()
}
