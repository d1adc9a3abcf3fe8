//! [`Tokenizer`]: text ↔ token ids with a Hugging Face `tokenizer.json`.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::types::{ModelInput, TokenId};

/// A loaded tokenizer: encodes text to token ids and decodes ids back to text.
///
/// Built from the bytes of a `tokenizer.json` (the file `AutoTokenizer.from_pretrained` reads
/// for a fast tokenizer). Clones share the loaded model.
///
/// ```
/// # fn demo(json: &[u8]) -> tinker_core::Result<()> {
/// use tinker_core::tokenizer::Tokenizer;
///
/// let tokenizer = Tokenizer::from_json_bytes(json)?;
/// let ids = tokenizer.encode("Hello world", false)?;
/// assert_eq!(tokenizer.decode(&ids, false)?, "Hello world");
/// let prompt = tokenizer.model_input("Hello world")?; // a ModelInput of one text chunk
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tokenizer {
    inner: Arc<tokenizers::Tokenizer>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Parses a `tokenizer.json`. A file that is not one is an [`Error::Decode`].
    pub fn from_json_bytes(json: &[u8]) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(json)
            .map_err(|e| Error::decode("tokenizer.json", e.to_string()))?;
        Ok(Tokenizer::from_tokenizers(inner))
    }

    /// Wraps a tokenizer built with the `tokenizers` crate directly.
    pub fn from_tokenizers(inner: tokenizers::Tokenizer) -> Tokenizer {
        Tokenizer {
            inner: Arc::new(inner),
        }
    }

    /// The underlying `tokenizers` tokenizer, for everything this wrapper does not expose.
    pub fn as_tokenizers(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`. With `add_special_tokens` the tokenizer's post-processor adds its
    /// special tokens (e.g. a BOS token), as `tokenizer.encode(text)` does in Python; chat
    /// rendering passes `false`. Special-token text in `text` (`<|im_start|>` …) always maps
    /// to its special id.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<TokenId>> {
        let encoding = self
            .inner
            .encode(text, add_special_tokens)
            .map_err(|e| Error::invalid("text", format!("could not tokenize: {e}")))?;
        encoding
            .get_ids()
            .iter()
            .map(|&id| {
                TokenId::try_from(id).map_err(|_| {
                    Error::decode("tokenizer.json", format!("token id {id} exceeds i32"))
                })
            })
            .collect()
    }

    /// The text of `ids`; with `skip_special_tokens`, special tokens are left out.
    pub fn decode(&self, ids: &[TokenId], skip_special_tokens: bool) -> Result<String> {
        let ids = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                u32::try_from(id).map_err(|_| {
                    Error::invalid(format!("ids[{i}]"), "token ids are never negative")
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        self.inner
            .decode(&ids, skip_special_tokens)
            .map_err(|e| Error::invalid("ids", format!("could not decode: {e}")))
    }

    /// A prompt of one text chunk holding the tokens of `text` (no special tokens added).
    pub fn model_input(&self, text: &str) -> Result<ModelInput> {
        Ok(ModelInput::from_tokens(self.encode(text, false)?))
    }

    /// The id of a token (including added and special tokens), if the vocabulary has it.
    pub fn token_to_id(&self, token: &str) -> Option<TokenId> {
        self.inner
            .token_to_id(token)
            .and_then(|id| TokenId::try_from(id).ok())
    }

    /// The token string of an id, if the vocabulary has it.
    pub fn id_to_token(&self, id: TokenId) -> Option<String> {
        u32::try_from(id)
            .ok()
            .and_then(|id| self.inner.id_to_token(id))
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
