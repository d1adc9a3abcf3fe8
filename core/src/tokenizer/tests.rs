//! Tokenizers built here, in code, and the chat layouts rendered with them.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::AddedToken;

use super::*;
use crate::types::{StopCondition, TokenId};

/// The special tokens of the byte tokenizer, from id 256 on.
const SPECIALS: [&str; 6] = [
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|im_start|>",
    "<|im_end|>",
];
const BOS: TokenId = 256;
const START_HEADER: TokenId = 257;
const END_HEADER: TokenId = 258;
const EOT: TokenId = 259;
const IM_START: TokenId = 260;
const IM_END: TokenId = 261;

/// GPT-2's byte → printable character table (what the ByteLevel pre-tokenizer emits).
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    if printable(b) {
        return char::from(b);
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + rank).unwrap()
}

/// A byte-level tokenizer whose id for byte `b` is `b` (like the local server's toy model),
/// plus the chat special tokens from 256 on, serialized to `tokenizer.json`.
fn byte_tokenizer_json() -> String {
    let vocab: Vocab = (0..=255u8)
        .map(|b| (byte_char(b).to_string(), u32::from(b)))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, Vec::new())
        .build()
        .unwrap();
    let mut t = tokenizers::Tokenizer::new(bpe);
    t.with_pre_tokenizer(Some(
        ByteLevel::default()
            .add_prefix_space(false)
            .use_regex(false),
    ));
    t.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = SPECIALS
        .iter()
        .map(|s| AddedToken::from(*s, true))
        .collect();
    t.add_special_tokens(&specials);
    t.to_string(false).unwrap()
}

fn byte_tokenizer() -> Tokenizer {
    Tokenizer::from_json_bytes(byte_tokenizer_json().as_bytes()).unwrap()
}

fn bytes(s: &str) -> Vec<TokenId> {
    s.bytes().map(TokenId::from).collect()
}

/// Concatenates token runs, for readable expected layouts.
fn layout(parts: &[&[TokenId]]) -> Vec<TokenId> {
    parts.concat()
}

#[test]
fn a_word_level_tokenizer_serialized_to_json_round_trips_text() {
    let vocab: Vocab = [("[UNK]", 0), ("hello", 1), ("world", 2), ("!", 3)]
        .into_iter()
        .map(|(w, i)| (w.to_owned(), i))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut built = tokenizers::Tokenizer::new(model);
    built.with_pre_tokenizer(Some(Whitespace {}));
    let json = built.to_string(true).unwrap();

    let tokenizer = Tokenizer::from_json_bytes(json.as_bytes()).unwrap();
    let ids = tokenizer.encode("hello world !", false).unwrap();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), "hello world !");
    assert_eq!(
        tokenizer.encode("hello moon", false).unwrap(),
        vec![1, 0],
        "unknown word → [UNK]"
    );
    assert_eq!(tokenizer.vocab_size(), 4);
    assert_eq!(tokenizer.token_to_id("world"), Some(2));
    assert_eq!(tokenizer.id_to_token(3).as_deref(), Some("!"));
}

#[test]
fn the_byte_tokenizer_maps_every_byte_to_its_value_and_back() {
    let tokenizer = byte_tokenizer();
    let text = "Hi there,\n\tnaïve café ☕ — 1+1=2";
    let ids = tokenizer.encode(text, false).unwrap();
    assert_eq!(ids, bytes(text));
    assert_eq!(tokenizer.decode(&ids, false).unwrap(), text);
    assert_eq!(
        tokenizer.model_input(text).unwrap().to_tokens().unwrap(),
        bytes(text)
    );
}

#[test]
fn special_token_text_encodes_to_its_id_and_can_be_skipped_when_decoding() {
    let tokenizer = byte_tokenizer();
    let ids = tokenizer.encode("<|im_start|>hi<|im_end|>", false).unwrap();
    assert_eq!(ids, layout(&[&[IM_START], &bytes("hi"), &[IM_END]]));
    assert_eq!(tokenizer.decode(&ids, true).unwrap(), "hi");
    assert_eq!(
        tokenizer.decode(&ids, false).unwrap(),
        "<|im_start|>hi<|im_end|>"
    );
}

#[test]
fn negative_ids_and_garbage_files_are_rejected_with_their_location() {
    let tokenizer = byte_tokenizer();
    let err = tokenizer.decode(&[72, -1], false).unwrap_err();
    assert!(err.to_string().contains("ids[1]"), "{err}");
    let err = Tokenizer::from_json_bytes(b"{\"not\": \"a tokenizer\"}").unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Decode);
}

fn conversation() -> Vec<Message> {
    vec![
        Message::system("Be brief."),
        Message::user("2+2?"),
        Message::assistant("4"),
        Message::user("3+3?"),
    ]
}

#[test]
fn chatml_prompts_wrap_each_turn_and_end_with_the_assistant_header() {
    let chat = ChatRenderer::new(byte_tokenizer(), ChatFormat::ChatMl);
    let prompt = chat.generation_prompt(&conversation()).unwrap();
    let want = layout(&[
        &[IM_START],
        &bytes("system\nBe brief."),
        &[IM_END],
        &bytes("\n"),
        &[IM_START],
        &bytes("user\n2+2?"),
        &[IM_END],
        &bytes("\n"),
        &[IM_START],
        &bytes("assistant\n4"),
        &[IM_END],
        &bytes("\n"),
        &[IM_START],
        &bytes("user\n3+3?"),
        &[IM_END],
        &bytes("\n"),
        &[IM_START],
        &bytes("assistant\n"),
    ]);
    assert_eq!(prompt.to_tokens().unwrap(), want);
    assert_eq!(
        chat.stop_condition().unwrap(),
        StopCondition::Tokens(vec![IM_END])
    );
}

#[test]
fn llama3_prompts_start_with_begin_of_text_and_use_header_tokens() {
    let chat = ChatRenderer::new(byte_tokenizer(), ChatFormat::Llama3);
    let prompt = chat.generation_prompt(&[Message::user("hi")]).unwrap();
    let want = layout(&[
        &[BOS],
        &[START_HEADER],
        &bytes("user"),
        &[END_HEADER],
        &bytes("\n\nhi"),
        &[EOT],
        &[START_HEADER],
        &bytes("assistant"),
        &[END_HEADER],
        &bytes("\n\n"),
    ]);
    assert_eq!(prompt.to_tokens().unwrap(), want);
    assert_eq!(
        chat.stop_condition().unwrap(),
        StopCondition::Tokens(vec![EOT])
    );
}

#[test]
fn role_colon_prompts_are_plain_text_and_stop_at_the_next_user_turn() {
    let chat = ChatRenderer::new(byte_tokenizer(), ChatFormat::RoleColon);
    let prompt = chat
        .generation_prompt(&[Message::system("Be brief."), Message::user("2+2?")])
        .unwrap();
    assert_eq!(
        prompt.to_tokens().unwrap(),
        bytes("System: Be brief.\n\nUser: 2+2?\n\nAssistant:")
    );
    assert_eq!(
        chat.stop_condition().unwrap(),
        StopCondition::Strings(vec!["\n\nUser:".into()])
    );
}

#[test]
fn supervised_examples_weigh_only_the_selected_assistant_outputs() {
    let chat = ChatRenderer::new(byte_tokenizer(), ChatFormat::ChatMl);
    let messages = [
        Message::user("a?"),
        Message::assistant("b"),
        Message::user("c?"),
        Message::assistant("d"),
    ];
    let last = chat
        .supervised_example(&messages, TrainOnWhat::LastAssistantMessage)
        .unwrap();
    let tokens = last.input.to_tokens().unwrap();
    assert_eq!(tokens.len(), last.weights.len());
    let trained: Vec<TokenId> = tokens
        .iter()
        .zip(&last.weights)
        .filter(|(_, &w)| w == 1.0)
        .map(|(&t, _)| t)
        .collect();
    assert_eq!(
        trained,
        layout(&[&bytes("d"), &[IM_END]]),
        "the last answer and its end token"
    );

    let all = chat
        .supervised_example(&messages, TrainOnWhat::AllAssistantMessages)
        .unwrap();
    let trained: Vec<TokenId> = all
        .input
        .to_tokens()
        .unwrap()
        .into_iter()
        .zip(&all.weights)
        .filter(|(_, &w)| w == 1.0)
        .map(|(t, _)| t)
        .collect();
    assert_eq!(
        trained,
        layout(&[&bytes("b"), &[IM_END], &bytes("d"), &[IM_END]])
    );
    // The prompt of the last turn is the generation prompt of the turns before it.
    let prompt = chat
        .generation_prompt(&messages[..3])
        .unwrap()
        .to_tokens()
        .unwrap();
    assert_eq!(all.input.to_tokens().unwrap()[..prompt.len()], prompt[..]);
}

#[test]
fn role_colon_examples_train_the_answer_and_the_start_of_the_stop_text() {
    let chat = ChatRenderer::new(byte_tokenizer(), ChatFormat::RoleColon);
    let example = chat
        .supervised_example(
            &[Message::user("hi"), Message::assistant("hello")],
            TrainOnWhat::LastAssistantMessage,
        )
        .unwrap();
    let text = "User: hi\n\nAssistant: hello\n\nUser:";
    assert_eq!(example.input.to_tokens().unwrap(), bytes(text));
    let first_trained = example.weights.iter().position(|&w| w == 1.0).unwrap();
    assert_eq!(&text[first_trained..], " hello\n\nUser:");
    assert!(example.weights[first_trained..].iter().all(|&w| w == 1.0));
}

#[test]
fn examples_without_the_message_to_train_on_are_invalid_input() {
    let chat = ChatRenderer::new(byte_tokenizer(), ChatFormat::ChatMl);
    let err = chat
        .supervised_example(&[Message::user("hi")], TrainOnWhat::LastAssistantMessage)
        .unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    assert!(chat
        .supervised_example(&[], TrainOnWhat::AllMessages)
        .is_err());
}

#[test]
fn a_tokenizer_without_the_format_s_special_tokens_cannot_render_it() {
    let vocab: Vocab = [("[UNK]".to_owned(), 0)].into_iter().collect();
    let model = WordLevel::builder()
        .vocab(vocab)
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let json = tokenizers::Tokenizer::new(model).to_string(false).unwrap();
    let chat = ChatRenderer::new(
        Tokenizer::from_json_bytes(json.as_bytes()).unwrap(),
        ChatFormat::Llama3,
    );
    let err = chat.generation_prompt(&[Message::user("hi")]).unwrap_err();
    assert!(err.to_string().contains("<|begin_of_text|>"), "{err}");
}

#[test]
fn responses_are_parsed_up_to_the_end_of_turn() {
    let chat = ChatRenderer::new(byte_tokenizer(), ChatFormat::ChatMl);
    let sampled = layout(&[&bytes(" four "), &[IM_END], &bytes("junk")]);
    assert_eq!(
        chat.parse_response(&sampled).unwrap(),
        Message::assistant("four")
    );
    let chat = ChatRenderer::new(byte_tokenizer(), ChatFormat::RoleColon);
    let sampled = bytes(" four\n\nUser: more");
    assert_eq!(
        chat.parse_response(&sampled).unwrap(),
        Message::assistant("four")
    );
}

#[test]
fn the_recommended_format_follows_the_model_family() {
    assert_eq!(
        ChatFormat::for_model("meta-llama/Llama-3.2-1B"),
        ChatFormat::Llama3
    );
    assert_eq!(ChatFormat::for_model("Qwen/Qwen3-8B"), ChatFormat::ChatMl);
    assert_eq!(ChatFormat::for_model("toy/bigram"), ChatFormat::RoleColon);
}
