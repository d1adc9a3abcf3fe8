//! Conversations to tokens: the chat layouts of the Tinker cookbook's renderers, for prompts
//! (`build_generation_prompt`) and for supervised examples with per-token loss weights
//! (`build_supervised_example`).
//!
//! Each message is rendered as a *header* (never trained on) followed by its *output* (trained
//! on when the message is selected by [`TrainOnWhat`]):
//!
//! | format | header | output | stop |
//! |---|---|---|---|
//! | [`ChatFormat::RoleColon`] | `User:` | ` {content}\n\n` | the text `\n\nUser:` |
//! | [`ChatFormat::Llama3`] | `<\|start_header_id\|>{role}<\|end_header_id\|>\n\n` | `{content}<\|eot_id\|>` | token `<\|eot_id\|>` |
//! | [`ChatFormat::ChatMl`] | `\n<\|im_start\|>{role}\n` (no `\n` before the first) | `{content}<\|im_end\|>` | token `<\|im_end\|>` |
//!
//! Llama 3 prompts start with `<|begin_of_text|>`. A generation prompt ends with the header of
//! an assistant message, so the model writes the output.

use crate::error::{Error, Result};
use crate::types::{ModelInput, StopCondition, TokenId};

use super::encoding::Tokenizer;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `system`, `user`, `assistant` (or `tool`, rendered as the format names it).
    pub role: String,
    /// The text of the turn.
    pub content: String,
}

impl Message {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Message {
        Message::new("system", content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Message {
        Message::new("user", content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new("assistant", content)
    }
}

/// A chat layout (the cookbook's renderer names in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChatFormat {
    /// `User: …\n\nAssistant: …` plain text, for base models and the toy model (`role_colon`).
    RoleColon,
    /// Llama 3 header tokens (`llama3`).
    Llama3,
    /// ChatML as used by Qwen 3 instruct models, no thinking block (`qwen3_instruct`).
    ChatMl,
}

impl ChatFormat {
    /// The format the cookbook recommends for a base model: Llama 3 for `meta-llama/Llama-3*`,
    /// ChatML for `Qwen/*`, role-colon text otherwise.
    pub fn for_model(model_name: &str) -> ChatFormat {
        if model_name.starts_with("meta-llama/Llama-3") {
            ChatFormat::Llama3
        } else if model_name.starts_with("Qwen/") {
            ChatFormat::ChatMl
        } else {
            ChatFormat::RoleColon
        }
    }
}

/// Which messages of a supervised example carry loss weight 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum TrainOnWhat {
    /// Only the output of the last assistant message (the cookbook's default).
    #[default]
    LastAssistantMessage,
    /// The output of every assistant message.
    AllAssistantMessages,
    /// The output of every message.
    AllMessages,
}

/// A rendered conversation for training: the input and one loss weight per token.
#[derive(Debug, Clone, PartialEq)]
pub struct SupervisedExample {
    /// Every token of the conversation, as one text chunk.
    pub input: ModelInput,
    /// `1.0` for tokens to train on, `0.0` for context; as long as `input`.
    pub weights: Vec<f32>,
}

/// Renders conversations with one tokenizer in one [`ChatFormat`].
///
/// ```
/// # fn demo(tokenizer: &tinker_core::tokenizer::Tokenizer) -> tinker_core::Result<()> {
/// use tinker_core::tokenizer::{ChatFormat, ChatRenderer, Message, TrainOnWhat};
///
/// let chat = ChatRenderer::new(tokenizer.clone(), ChatFormat::ChatMl);
/// let prompt = chat.generation_prompt(&[Message::user("What is 2+2?")])?;
/// let stop = chat.stop_condition()?; // pass as SamplingParams::stop
/// let example = chat.supervised_example(
///     &[Message::user("What is 2+2?"), Message::assistant("4")],
///     TrainOnWhat::LastAssistantMessage,
/// )?;
/// assert_eq!(example.weights.len(), example.input.length()?);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ChatRenderer {
    tokenizer: Tokenizer,
    format: ChatFormat,
}

impl ChatRenderer {
    /// A renderer of `format` over `tokenizer`.
    pub fn new(tokenizer: Tokenizer, format: ChatFormat) -> ChatRenderer {
        ChatRenderer { tokenizer, format }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The format.
    pub fn format(&self) -> ChatFormat {
        self.format
    }

    /// The prompt for the model's next (assistant) turn after `messages`.
    pub fn generation_prompt(&self, messages: &[Message]) -> Result<ModelInput> {
        let mut tokens = self.bos()?;
        for (i, m) in messages.iter().enumerate() {
            tokens.extend(self.encode(&self.header(&m.role, i))?);
            tokens.extend(self.encode(&self.output(m))?);
        }
        tokens.extend(self.encode(&self.header("assistant", messages.len()))?);
        Ok(ModelInput::from_tokens(tokens))
    }

    /// The whole conversation with loss weights: headers and the start-of-text token weigh 0,
    /// outputs of the messages `train_on` selects weigh 1.
    pub fn supervised_example(
        &self,
        messages: &[Message],
        train_on: TrainOnWhat,
    ) -> Result<SupervisedExample> {
        if messages.is_empty() {
            return Err(Error::invalid("messages", "a conversation needs a message"));
        }
        let last_assistant = messages.iter().rposition(|m| m.role == "assistant");
        if train_on == TrainOnWhat::LastAssistantMessage && last_assistant.is_none() {
            return Err(Error::invalid(
                "messages",
                "training on the last assistant message needs an assistant message",
            ));
        }
        let mut tokens = self.bos()?;
        let mut weights = vec![0.0; tokens.len()];
        for (i, m) in messages.iter().enumerate() {
            let header = self.encode(&self.header(&m.role, i))?;
            weights.extend(std::iter::repeat_n(0.0, header.len()));
            tokens.extend(header);
            let trained = match train_on {
                TrainOnWhat::LastAssistantMessage => Some(i) == last_assistant,
                TrainOnWhat::AllAssistantMessages => m.role == "assistant",
                TrainOnWhat::AllMessages => true,
            };
            let mut output = self.output(m);
            // Role-colon text has no end token: the last assistant turn learns to emit the
            // stop sequence's start (the cookbook's `stop_overlap`).
            if self.format == ChatFormat::RoleColon
                && m.role == "assistant"
                && i + 1 == messages.len()
            {
                output.push_str("User:");
            }
            let output = self.encode(&output)?;
            let w = if trained { 1.0 } else { 0.0 };
            weights.extend(std::iter::repeat_n(w, output.len()));
            tokens.extend(output);
        }
        Ok(SupervisedExample {
            input: ModelInput::from_tokens(tokens),
            weights,
        })
    }

    /// Where sampling should stop: the end-of-turn token, or the `\n\nUser:` text.
    pub fn stop_condition(&self) -> Result<StopCondition> {
        Ok(match self.end_token() {
            None => StopCondition::Strings(vec!["\n\nUser:".to_owned()]),
            Some(token) => StopCondition::Tokens(vec![self.special(token)?]),
        })
    }

    /// The assistant message in sampled `tokens`: text up to the end-of-turn token or stop
    /// text, trimmed of surrounding whitespace.
    pub fn parse_response(&self, tokens: &[TokenId]) -> Result<Message> {
        let text = match self.end_token() {
            Some(end) => {
                let end = self.special(end)?;
                let cut = tokens
                    .iter()
                    .position(|&t| t == end)
                    .unwrap_or(tokens.len());
                self.tokenizer.decode(&tokens[..cut], false)?
            }
            None => {
                let text = self.tokenizer.decode(tokens, false)?;
                match text.split_once("\n\nUser:") {
                    Some((before, _)) => before.to_owned(),
                    None => text,
                }
            }
        };
        Ok(Message::assistant(text.trim()))
    }

    fn end_token(&self) -> Option<&'static str> {
        match self.format {
            ChatFormat::RoleColon => None,
            ChatFormat::Llama3 => Some("<|eot_id|>"),
            ChatFormat::ChatMl => Some("<|im_end|>"),
        }
    }

    fn bos(&self) -> Result<Vec<TokenId>> {
        match self.format {
            ChatFormat::Llama3 => Ok(vec![self.special("<|begin_of_text|>")?]),
            ChatFormat::RoleColon | ChatFormat::ChatMl => Ok(Vec::new()),
        }
    }

    fn header(&self, role: &str, index: usize) -> String {
        match self.format {
            ChatFormat::RoleColon => format!("{}:", capitalize(role)),
            ChatFormat::Llama3 => {
                let role = if role == "tool" { "ipython" } else { role };
                format!("<|start_header_id|>{role}<|end_header_id|>\n\n")
            }
            ChatFormat::ChatMl => {
                let role = if role == "tool" { "user" } else { role };
                let newline = if index > 0 { "\n" } else { "" };
                format!("{newline}<|im_start|>{role}\n")
            }
        }
    }

    fn output(&self, message: &Message) -> String {
        match self.end_token() {
            None => format!(" {}\n\n", message.content),
            Some(end) => format!("{}{end}", message.content),
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<TokenId>> {
        self.tokenizer.encode(text, false)
    }

    /// The id of a special token the format needs; a tokenizer without it cannot render it.
    fn special(&self, token: &str) -> Result<TokenId> {
        self.tokenizer.token_to_id(token).ok_or_else(|| {
            Error::invalid(
                "tokenizer",
                format!(
                    "the {:?} chat format needs the token {token}, which this tokenizer lacks",
                    self.format
                ),
            )
        })
    }
}

fn capitalize(role: &str) -> String {
    let mut chars = role.chars();
    match chars.next() {
        Some(first) => first
            .to_uppercase()
            .chain(chars.flat_map(char::to_lowercase))
            .collect(),
        None => String::new(),
    }
}
