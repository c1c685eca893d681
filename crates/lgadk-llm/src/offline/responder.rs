//! The conversational replies of [`OfflineModel`](super::OfflineModel): a pure function of the
//! conversation, from a small built-in glossary, with no randomness and no clock.

use lgadk_core::{Message, Role};

use super::OFFLINE_LABEL;

const GREETINGS: &[&str] = &[
    "good afternoon",
    "good evening",
    "good morning",
    "hello there",
    "hey there",
    "hi there",
    "greetings",
    "howdy",
    "hello",
    "hey",
    "hi",
];

const FILLERS: &[&str] = &["and ", "so ", "ok ", "okay ", "but ", "also ", "then ", "well ", "please "];

const LEAD_INS: &[&str] = &[
    "can you tell me more about ",
    "could you tell me more about ",
    "can you tell me about ",
    "could you tell me about ",
    "i want to know about ",
    "i'd like to know about ",
    "do you know about ",
    "tell me more about ",
    "can you describe ",
    "can you explain ",
    "could you explain ",
    "what do you know about ",
    "tell me about ",
    "talk about ",
    "what about ",
    "how about ",
    "explain ",
    "describe ",
    "what is ",
    "what are ",
    "what's ",
    "who is ",
    "who was ",
];

const TRAILERS: &[&str] =
    &[" specifically", " please", " in detail", " in simple terms", " briefly", " for me", " again"];

const ARTICLES: &[&str] = &["the ", "a ", "an "];

/// Built-in glossary: (phrases that select the entry, what the model says).
const GLOSSARY: &[(&[&str], &str)] = &[
    (
        &["neural network", "neural net"],
        "Neural networks are layers of simple connected units (neurons): each unit weighs its inputs, and \
         training adjusts those weights by backpropagation until the network maps inputs to the right \
         outputs. Stacking many layers is what deep learning means.",
    ),
    (
        &["deep learning"],
        "Deep learning trains neural networks with many layers on large data sets; it powers modern vision, \
         speech and language models.",
    ),
    (
        &["machine learning"],
        "Machine learning is the part of AI where programs learn patterns from examples instead of following \
         hand-written rules: supervised learning fits labelled data, unsupervised learning finds structure in \
         unlabelled data, and reinforcement learning learns from rewards.",
    ),
    (
        &["large language model", "language model", "llm"],
        "A large language model is a neural network trained to predict the next token of text; at scale that \
         lets it answer questions, summarise and write code.",
    ),
    (
        &["artificial intelligence", "ai"],
        "Artificial intelligence is the broad field of making computers do tasks that normally need human \
         intelligence, such as understanding language, recognising images or planning.",
    ),
    (
        &["rust"],
        "Rust is a systems programming language that guarantees memory safety without a garbage collector, \
         through ownership and borrowing checked at compile time.",
    ),
];

const WEATHER_WORDS: &[&str] = &["weather", "forecast", "rain", "temperature", "sunny", "snow"];

/// What the model made of one user message.
#[derive(Debug, Clone, PartialEq)]
enum Subject {
    /// Only a greeting.
    Nothing,
    Weather {
        tomorrow: bool,
    },
    Known {
        label: String,
        summary: &'static str,
    },
    Topic(String),
    Statement(String),
}

impl Subject {
    /// How the model refers back to this subject later ("Earlier you asked about …").
    fn label(&self) -> Option<String> {
        match self {
            Self::Nothing => None,
            Self::Weather { tomorrow: false } => Some("the weather".to_owned()),
            Self::Weather { tomorrow: true } => Some("tomorrow's forecast".to_owned()),
            Self::Known { label, .. } | Self::Topic(label) => Some(label.clone()),
            Self::Statement(text) => Some(format!("\"{text}\"")),
        }
    }
}

/// Whether `phrase` occurs in `lower` as whole words (a trailing plural `s` allowed).
fn contains_phrase(lower: &str, phrase: &str) -> bool {
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(pos) = lower[from..].find(phrase) {
        let start = from + pos;
        let mut end = start + phrase.len();
        let before_ok = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if bytes.get(end) == Some(&b's') {
            end += 1;
        }
        let after_ok = bytes.get(end).is_none_or(|b| !b.is_ascii_alphanumeric());
        if before_ok && after_ok {
            return true;
        }
        from = start + 1;
    }
    false
}

fn strip_prefix_ci<'a>(text: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    prefixes.iter().find(|p| lower.starts_with(*p)).map(|p| &text[p.len()..])
}

/// The first `words` words of `text`, whitespace collapsed, with `…` if it had more.
pub(super) fn excerpt(text: &str, words: usize) -> String {
    let all: Vec<&str> = text.split_whitespace().collect();
    let mut out = all.iter().take(words).copied().collect::<Vec<_>>().join(" ");
    if all.len() > words {
        out.push('…');
    }
    out
}

/// Splits a greeting off the front of `text`: `("Hello! Can you…")` → `(true, "Can you…")`.
fn split_greeting(text: &str) -> (bool, &str) {
    let mut rest = text.trim_start();
    let mut greeted = false;
    loop {
        let lower = rest.to_ascii_lowercase();
        let found = GREETINGS.iter().find(|g| {
            lower.starts_with(*g) && lower.as_bytes().get(g.len()).is_none_or(|b| !b.is_ascii_alphanumeric())
        });
        match found {
            Some(g) => {
                greeted = true;
                rest = rest[g.len()..].trim_start_matches(|c: char| c.is_whitespace() || ",.!;:-".contains(c));
            }
            None => return (greeted, rest),
        }
    }
}

fn read_subject(text: &str) -> (bool, Subject) {
    let (greeted, rest) = split_greeting(text);
    // The first sentence carries the request.
    let sentence = rest.split_inclusive(['.', '!', '?']).map(str::trim).find(|s| !s.is_empty()).unwrap_or("");
    let mut sentence = sentence.trim_end_matches(|c: char| c.is_whitespace() || ".!?".contains(c));
    while let Some(stripped) = strip_prefix_ci(sentence, FILLERS) {
        sentence = stripped.trim_start();
    }
    if sentence.is_empty() {
        return (greeted, Subject::Nothing);
    }
    let lower = sentence.to_ascii_lowercase();
    if WEATHER_WORDS.iter().any(|w| contains_phrase(&lower, w)) {
        return (greeted, Subject::Weather { tomorrow: contains_phrase(&lower, "tomorrow") });
    }
    let asked = strip_prefix_ci(sentence, LEAD_INS);
    let mut topic = asked.unwrap_or(sentence).trim();
    loop {
        let lower = topic.to_ascii_lowercase();
        match TRAILERS.iter().find(|t| lower.ends_with(*t)) {
            Some(t) => topic = topic[..topic.len() - t.len()].trim_end(),
            None => break,
        }
    }
    if let Some(stripped) = strip_prefix_ci(topic, ARTICLES) {
        topic = stripped;
    }
    let topic_lower = topic.to_ascii_lowercase();
    for (phrases, summary) in GLOSSARY {
        if phrases.iter().any(|p| contains_phrase(&topic_lower, p)) {
            let label = if topic.split_whitespace().count() <= 6 { topic.to_owned() } else { phrases[0].to_owned() };
            return (greeted, Subject::Known { label, summary });
        }
    }
    if asked.is_some() && !topic.is_empty() && topic.split_whitespace().count() <= 8 {
        (greeted, Subject::Topic(topic.to_owned()))
    } else {
        (greeted, Subject::Statement(excerpt(sentence, 12)))
    }
}

fn join_labels(labels: &[String]) -> String {
    match labels {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The conversational reply to `messages`: a pure function of the conversation.
pub(super) fn compose_reply(messages: &[Message]) -> String {
    if let Some(answer) = super::tools::answer_from_results(messages) {
        return answer;
    }
    let user_turns: Vec<&Message> = messages.iter().filter(|m| m.role == Role::User).collect();
    let Some((latest, earlier)) = user_turns.split_last() else {
        return format!(
            "{OFFLINE_LABEL} Hello! I'm lgadk's offline model. Send a message and I'll answer from the \
             conversation, without a network."
        );
    };
    let earlier_subjects: Vec<Subject> = earlier.iter().map(|m| read_subject(&m.content).1).collect();
    let (greeted, subject) = read_subject(&latest.content);

    let mut labels: Vec<String> = Vec::new();
    for label in earlier_subjects.iter().rev().filter_map(Subject::label) {
        if Some(&label) != subject.label().as_ref() && !labels.contains(&label) {
            labels.push(label);
        }
        if labels.len() == 3 {
            break;
        }
    }
    labels.reverse();
    let memory =
        if labels.is_empty() { String::new() } else { format!(" Earlier you asked about {}.", join_labels(&labels)) };
    let hello = if greeted { " Hello!" } else { "" };

    let body = match &subject {
        Subject::Nothing => {
            "I'm lgadk's offline model: I answer from this conversation, without a network. Ask me something."
                .to_owned()
        }
        Subject::Weather { tomorrow: false } => "I can't tell you the weather: I run offline, without a network \
             or live data. A weather service, or a real model with a weather tool, can answer that."
            .to_owned(),
        Subject::Weather { tomorrow: true } => {
            let either =
                if earlier_subjects.iter().any(|s| matches!(s, Subject::Weather { .. })) { " either" } else { "" };
            format!(
                "I can't see tomorrow's forecast{either}: offline I have no live weather data. A weather service \
                 has the forecast."
            )
        }
        Subject::Known { label, summary } => format!("You asked about {label}. {summary}"),
        Subject::Topic(topic) => format!(
            "You asked about {topic}. I'm lgadk's offline model, so I have no knowledge to answer that from; \
             connect a real model (for example `openai/gpt-4o-mini` or `ollama/llama3`) for a full answer."
        ),
        Subject::Statement(text) => format!(
            "You said: \"{text}\". I'm lgadk's offline model: I can follow the conversation but not think about \
             it; connect a real model for a real answer."
        ),
    };
    format!("{OFFLINE_LABEL}{hello} {body}{memory}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation(turns: &[&str]) -> Vec<Message> {
        let mut messages = vec![Message::system("You are a helpful assistant.")];
        for turn in turns {
            messages.push(Message::user(*turn));
            messages.push(Message::assistant(compose_reply(&messages)));
        }
        messages.pop();
        messages
    }

    #[test]
    fn demo_prompts_get_sensible_labelled_answers() {
        let first = compose_reply(&conversation(&["Hello! Can you tell me about machine learning?"]));
        assert!(first.starts_with("[offline model] Hello! You asked about machine learning."), "{first}");
        assert!(!first.contains("Earlier"), "{first}");

        let second = compose_reply(&conversation(&[
            "Hello! Can you tell me about machine learning?",
            "Can you explain neural networks specifically?",
        ]));
        assert!(second.starts_with("[offline model] You asked about neural networks. Neural networks"), "{second}");
        assert!(second.ends_with("Earlier you asked about machine learning."), "{second}");

        let weather = compose_reply(&conversation(&["Hi there! What's the weather like today?"]));
        assert!(weather.starts_with("[offline model] Hello! I can't tell you the weather"), "{weather}");

        let tomorrow = compose_reply(&conversation(&[
            "Hi there! What's the weather like today?",
            "And what about tomorrow's forecast?",
        ]));
        assert!(tomorrow.contains("I can't see tomorrow's forecast either"), "{tomorrow}");
        assert!(tomorrow.ends_with("Earlier you asked about the weather."), "{tomorrow}");
    }

    #[test]
    fn other_inputs_are_echoed_honestly() {
        let topic = compose_reply(&[Message::user("What is the capital of France?")]);
        assert!(topic.contains("You asked about capital of France."), "{topic}");
        let statement = compose_reply(&[Message::user("I like trusting turtles.")]);
        assert!(statement.contains("You said: \"I like trusting turtles\""), "{statement}");
        assert!(compose_reply(&[]).starts_with(OFFLINE_LABEL));
        assert!(compose_reply(&[Message::user("hey")]).contains("Ask me something"));
    }

    #[test]
    fn memory_lists_the_three_latest_distinct_topics() {
        let reply = compose_reply(&conversation(&[
            "Tell me about Rust",
            "What is deep learning?",
            "Tell me about Rust",
            "What are LLMs?",
            "What is AI?",
            "Explain neural networks",
        ]));
        assert!(reply.ends_with("Earlier you asked about Rust, LLMs and AI."), "{reply}");
    }

    #[test]
    fn phrases_match_whole_words_only() {
        assert!(contains_phrase("neural networks rock", "neural network"));
        assert!(contains_phrase("what is ai", "ai"));
        assert!(!contains_phrase("trust me", "rust"));
        assert!(!contains_phrase("said", "ai"));
    }
}
