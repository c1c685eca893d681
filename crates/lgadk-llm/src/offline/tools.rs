//! How the conversational [`OfflineModel`](super::OfflineModel) uses tools: which tools it
//! calls, with which arguments, and how it answers from their results. The rule is written
//! out in the model's docs ("Tools"); everything here is a pure function of the request.

use std::collections::HashSet;

use lgadk_core::serde_json::{Map, Number, Value};
use lgadk_core::{ChatRequest, Message, Role, ToolCall, ToolChoice, ToolSpec};

use super::OFFLINE_LABEL;
use super::responder::excerpt;

/// Schemas nested deeper than this are not filled further (a schema built in code could nest
/// deep enough to overflow the stack otherwise).
const MAX_SCHEMA_DEPTH: usize = 32;

/// Characters trimmed off both ends of a string argument.
const TRIMMED: &[char] = &['.', ',', ';', ':', '!', '?', '"', '\'', '`'];

/// One leading word dropped from a string argument: "weather in Paris" fills `Paris`, and
/// "remember that I like tea" fills `I like tea`.
const LEADING_WORDS: &[&str] = &["about ", "for ", "in ", "of ", "on ", "at ", "that "];

/// Most words of a tool result quoted in the answer.
const RESULT_WORDS: usize = 48;

/// The tool calls the model makes for `request`; empty when it answers in text.
pub(super) fn plan_calls(request: &ChatRequest) -> Vec<ToolCall> {
    let Some(last) = request.messages.last().filter(|m| m.role == Role::User) else {
        return Vec::new();
    };
    if request.tools.is_empty() {
        return Vec::new();
    }
    let message = last.content.as_str();
    let lower = message.to_ascii_lowercase();
    let matching = || -> Vec<(&ToolSpec, Option<usize>)> {
        request.tools.iter().filter_map(|tool| tool_match(tool, &lower).map(|end| (tool, Some(end)))).collect()
    };
    let mut chosen = match &request.tool_choice {
        Some(ToolChoice::None) => Vec::new(),
        Some(ToolChoice::Tool(name)) => {
            request.tools.iter().filter(|t| &t.name == name).map(|t| (t, tool_match(t, &lower))).take(1).collect()
        }
        Some(ToolChoice::Required) => {
            let found = matching();
            if found.is_empty() { request.tools.iter().take(1).map(|t| (t, None)).collect() } else { found }
        }
        _ => matching(),
    };
    if request.parallel_tool_calls == Some(false) {
        chosen.truncate(1);
    }
    let mut ids = CallIds::new(&request.messages);
    let number = first_number(message);
    chosen
        .into_iter()
        .map(|(tool, end)| {
            let source = Source { text: string_argument(message, end), lower: &lower, number: number.as_ref() };
            ToolCall { id: ids.next(), name: tool.name.clone(), arguments: arguments(&tool.parameters, &source) }
        })
        .collect()
}

/// `call_<n>` ids: `n` counts on from the tool calls already in the conversation, skipping any
/// id the conversation already uses.
struct CallIds {
    taken: HashSet<String>,
    next: usize,
}

impl CallIds {
    fn new(messages: &[Message]) -> Self {
        let taken: HashSet<String> = messages.iter().flat_map(|m| &m.tool_calls).map(|c| c.id.clone()).collect();
        let next = messages.iter().map(|m| m.tool_calls.len()).sum::<usize>() + 1;
        Self { taken, next }
    }

    fn next(&mut self) -> String {
        loop {
            let id = format!("call_{}", self.next);
            self.next += 1;
            if self.taken.insert(id.clone()) {
                return id;
            }
        }
    }
}

/// Where the earliest of the tool's name (with `_` and `-` read as spaces) and its keywords
/// ends in `lower`, as whole words (a trailing plural `s` allowed).
fn tool_match(tool: &ToolSpec, lower: &str) -> Option<usize> {
    std::iter::once(&tool.name)
        .chain(&tool.keywords)
        .filter_map(|phrase| find_phrase(lower, phrase))
        .min_by_key(|&(start, _)| start)
        .map(|(_, end)| end)
}

/// The byte range of the first whole-word occurrence of `phrase` in `lower` (already
/// ASCII-lowercased), a trailing plural `s` included.
fn find_phrase(lower: &str, phrase: &str) -> Option<(usize, usize)> {
    let phrase = phrase.to_ascii_lowercase().replace(['_', '-'], " ");
    let phrase = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
    if phrase.is_empty() {
        return None;
    }
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    lower.match_indices(&phrase).find_map(|(start, _)| {
        let end = start + phrase.len();
        if !boundary(lower[..start].chars().next_back()) {
            return None;
        }
        let rest = &lower[end..];
        if boundary(rest.chars().next()) {
            Some((start, end))
        } else if rest.starts_with('s') && boundary(rest[1..].chars().next()) {
            Some((start, end + 1))
        } else {
            None
        }
    })
}

/// The text string arguments get: what follows the matched word (trimmed of spaces and
/// punctuation, one leading `about`/`for`/`in`/`of`/`on`/`at`/`that` dropped), or the whole message
/// (trimmed) when nothing follows it or nothing matched.
fn string_argument(message: &str, matched_end: Option<usize>) -> String {
    let trim = |text: &str| text.trim_matches(|c: char| c.is_whitespace() || TRIMMED.contains(&c)).to_owned();
    let after = matched_end.and_then(|end| message.get(end..)).map(trim).unwrap_or_default();
    let lower = after.to_ascii_lowercase();
    let after = match LEADING_WORDS.iter().find(|w| lower.starts_with(*w)) {
        Some(word) => trim(&after[word.len()..]),
        None => after,
    };
    if after.is_empty() { trim(message) } else { after }
}

/// The first number in a message: its integer part (if it fits an `i64`) and its value.
#[derive(Debug, Clone, PartialEq)]
struct FirstNumber {
    integer: Option<i64>,
    number: Option<Number>,
}

/// The first run of ASCII digits in `text`, with a `-` right before it (not after a letter or
/// digit) and a `.digits` fraction right after it.
fn first_number(text: &str) -> Option<FirstNumber> {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(u8::is_ascii_digit)?;
    let digits_after =
        |from: usize| bytes.get(from..).map_or(0, |rest| rest.iter().take_while(|b| b.is_ascii_digit()).count());
    let int_end = start + digits_after(start);
    let fraction = if bytes.get(int_end) == Some(&b'.') { digits_after(int_end + 1) } else { 0 };
    let end = if fraction > 0 { int_end + 1 + fraction } else { int_end };
    let negative = start.checked_sub(1).is_some_and(|minus| bytes.get(minus) == Some(&b'-'))
        && start.checked_sub(2).and_then(|i| bytes.get(i)).is_none_or(|b| !b.is_ascii_alphanumeric());
    let sign = if negative { "-" } else { "" };
    let integer = text.get(start..int_end).and_then(|digits| format!("{sign}{digits}").parse::<i64>().ok());
    let number = match integer {
        Some(i) if fraction == 0 => Some(Number::from(i)),
        _ => text
            .get(start..end)
            .and_then(|digits| format!("{sign}{digits}").parse::<f64>().ok())
            .and_then(Number::from_f64),
    };
    Some(FirstNumber { integer, number })
}

/// What arguments are filled from.
struct Source<'a> {
    /// The text string arguments get.
    text: String,
    /// The whole message, ASCII-lowercased (enum values are looked up in it).
    lower: &'a str,
    number: Option<&'a FirstNumber>,
}

/// The arguments object for a tool whose parameters are `schema`: `{}` unless the schema
/// describes an object.
fn arguments(schema: &Value, source: &Source<'_>) -> Value {
    if schema.get("properties").is_some() || primary_type(schema) == Some("object") {
        object(schema, source, 0)
    } else {
        Value::Object(Map::new())
    }
}

/// An object with its required properties and the optional ones the message supplies.
fn object(schema: &Value, source: &Source<'_>, depth: usize) -> Value {
    let required: Vec<&str> =
        schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let mut out = Map::new();
    for (name, property) in schema.get("properties").and_then(Value::as_object).into_iter().flatten() {
        if let Some(value) = value_for(property, source, required.contains(&name.as_str()), depth + 1) {
            out.insert(name.clone(), value);
        }
    }
    Value::Object(out)
}

/// The schema's type, or its first type other than `null` when it lists several.
fn primary_type(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t),
        Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    }
}

/// Whether the schema admits `null` (`"type": [..., "null"]`, a `null` branch or enum value).
fn nullable(schema: &Value) -> bool {
    let in_types = matches!(schema.get("type"), Some(Value::Array(ts)) if ts.iter().any(|t| t == "null"));
    let in_branches = ["anyOf", "oneOf"].iter().any(|key| {
        schema
            .get(*key)
            .and_then(Value::as_array)
            .is_some_and(|bs| bs.iter().any(|b| b.get("type") == Some(&"null".into())))
    });
    let in_enum = schema.get("enum").and_then(Value::as_array).is_some_and(|vs| vs.contains(&Value::Null));
    in_types || in_branches || in_enum
}

/// The value of one property: `Some` when it is required (a default for its type when the
/// message supplies none, or `null` if the schema allows it), or when the message supplies it.
fn value_for(schema: &Value, source: &Source<'_>, required: bool, depth: usize) -> Option<Value> {
    if depth > MAX_SCHEMA_DEPTH {
        return None;
    }
    if required && nullable(schema) {
        return value_for_inner(schema, source, false, depth).or(Some(Value::Null));
    }
    value_for_inner(schema, source, required, depth)
}

fn value_for_inner(schema: &Value, source: &Source<'_>, required: bool, depth: usize) -> Option<Value> {
    if let Some(constant) = schema.get("const") {
        return Some(constant.clone());
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let mentioned =
            options.iter().find(|o| o.as_str().is_some_and(|text| find_phrase(source.lower, text).is_some()));
        return mentioned.or_else(|| options.iter().find(|o| !o.is_null()).filter(|_| required)).cloned();
    }
    let branch = ["anyOf", "oneOf"]
        .iter()
        .filter_map(|key| schema.get(*key).and_then(Value::as_array))
        .flatten()
        .find(|b| b.get("type") != Some(&"null".into()));
    if let Some(branch) = branch {
        return value_for(branch, source, required, depth + 1);
    }
    let number = source.number;
    match primary_type(schema) {
        Some("integer") => match number.and_then(|n| n.integer) {
            Some(i) => Some(Value::from(i)),
            None => required.then(|| Value::from(0)),
        },
        Some("number") => match number.and_then(|n| n.number.clone()) {
            Some(n) => Some(Value::Number(n)),
            None => required.then(|| Value::from(0)),
        },
        Some("boolean") => required.then_some(Value::Bool(false)),
        Some("array") => required.then(|| Value::Array(Vec::new())),
        Some("object") => required.then(|| object(schema, source, depth)),
        Some("null") => required.then_some(Value::Null),
        // `string`, and a schema without a type: the text.
        _ => required.then(|| Value::String(source.text.clone())),
    }
}

/// The text answer to the tool results that end the conversation, one sentence per result
/// in the order of the results: `"<tool>: <result>."`. `None` unless the last message is a
/// tool result.
pub(super) fn answer_from_results(messages: &[Message]) -> Option<String> {
    let trailing = messages.iter().rev().take_while(|m| m.role == Role::Tool).count();
    if trailing == 0 {
        return None;
    }
    let results = messages.get(messages.len() - trailing..)?;
    let sentences: Vec<String> = results
        .iter()
        .map(|result| {
            let name = messages
                .iter()
                .rev()
                .flat_map(|m| &m.tool_calls)
                .find(|call| Some(&call.id) == result.tool_call_id.as_ref())
                .map_or("tool", |call| call.name.as_str());
            let text = excerpt(&result.content, RESULT_WORDS);
            let text = if text.is_empty() { "(no output)".to_owned() } else { text };
            let stop = if text.ends_with(['.', '!', '?', '…']) { "" } else { "." };
            format!("{name}: {text}{stop}")
        })
        .collect();
    Some(format!("{OFFLINE_LABEL} {}", sentences.join(" ")))
}

#[cfg(test)]
mod tests {
    use lgadk_core::serde_json::json;

    use super::*;

    fn tool(name: &str, parameters: Value) -> ToolSpec {
        ToolSpec::new(name, "", parameters)
    }

    fn text_tool(name: &str) -> ToolSpec {
        tool(name, json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}))
    }

    fn ask(text: &str, tools: Vec<ToolSpec>) -> ChatRequest {
        ChatRequest::new(vec![Message::system("sys"), Message::user(text)]).with_tools(tools)
    }

    fn names(calls: &[ToolCall]) -> Vec<&str> {
        calls.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn a_tool_is_called_when_its_name_or_a_keyword_is_in_the_message() {
        let weather = text_tool("get_weather").with_keywords(["forecast", "weather"]);
        let calls = plan_calls(&ask("What's the WEATHER in Paris?", vec![weather.clone()]));
        assert_eq!(names(&calls), ["get_weather"]);
        assert_eq!(calls[0].arguments, json!({"query": "Paris"}), "after the word, `in` and `?` dropped");
        let by_name = plan_calls(&ask("please get weather for Oslo", vec![text_tool("get_weather")]));
        assert_eq!(by_name[0].arguments, json!({"query": "Oslo"}), "`_` reads as a space");
        let hyphen = plan_calls(&ask("look up rust", vec![text_tool("look-up")]));
        assert_eq!(hyphen[0].arguments, json!({"query": "rust"}));
        assert_eq!(names(&plan_calls(&ask("Any forecasts?", vec![weather.clone()]))), ["get_weather"], "plural");
        assert!(plan_calls(&ask("I like weathervanes", vec![weather.clone()])).is_empty(), "whole words only");
        assert!(plan_calls(&ask("Tell me a story", vec![weather])).is_empty());
    }

    #[test]
    fn the_earliest_matching_word_decides_the_string_argument() {
        let note = text_tool("note").with_keywords(["remember"]);
        let calls = plan_calls(&ask("Remember this: buy milk, then note it", vec![note]));
        assert_eq!(calls[0].arguments, json!({"query": "this: buy milk, then note it"}));
        let remember = plan_calls(&ask("Remember that I prefer window seats.", vec![text_tool("remember")]));
        assert_eq!(remember[0].arguments, json!({"query": "I prefer window seats"}), "a leading `that` dropped");
        let alone = plan_calls(&ask("calculator!", vec![text_tool("calculator")]));
        assert_eq!(alone[0].arguments, json!({"query": "calculator"}), "nothing after it: the whole message");
        let kept =
            plan_calls(&ask("calculate (2 + 3) * 4", vec![text_tool("calculator").with_keywords(["calculate"])]));
        assert_eq!(kept[0].arguments, json!({"query": "(2 + 3) * 4"}), "brackets are not punctuation to trim");
    }

    #[test]
    fn matching_tools_are_called_in_the_order_offered_with_fresh_ids() {
        let tools = vec![text_tool("time"), text_tool("weather"), text_tool("news")];
        let calls = plan_calls(&ask("weather and time in Lima", tools.clone()));
        assert_eq!(names(&calls), ["time", "weather"]);
        assert_eq!(calls.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["call_1", "call_2"]);
        assert_eq!(calls[0].arguments, json!({"query": "Lima"}));
        assert_eq!(calls[1].arguments, json!({"query": "and time in Lima"}));

        let earlier = ToolCall { id: "call_3".into(), name: "news".into(), arguments: json!({}) };
        let mut request = ask("weather and time", tools);
        request.messages.insert(1, Message { tool_calls: vec![earlier], ..Message::assistant("") });
        request.messages.insert(2, Message::tool("call_3", "quiet day"));
        let ids: Vec<String> = plan_calls(&request).into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["call_2", "call_4"], "counted on from the conversation's calls, taken ids skipped");
    }

    #[test]
    fn tool_choice_and_parallel_tool_calls_are_respected() {
        let tools = vec![text_tool("time"), text_tool("weather"), text_tool("news")];
        let request = ask("weather and time", tools.clone());
        assert!(plan_calls(&request.clone().with_tool_choice(ToolChoice::None)).is_empty());
        assert_eq!(names(&plan_calls(&request.clone().with_tool_choice(ToolChoice::Auto))), ["time", "weather"]);
        assert_eq!(names(&plan_calls(&request.clone().with_tool_choice(ToolChoice::Required))), ["time", "weather"]);
        assert_eq!(names(&plan_calls(&request.clone().with_parallel_tool_calls(false))), ["time"]);
        let named = plan_calls(&request.with_tool_choice(ToolChoice::Tool("weather".into())));
        assert_eq!(names(&named), ["weather"]);
        assert_eq!(named[0].arguments, json!({"query": "and time"}), "its own match still fills its arguments");

        let nothing = ask("Hello there.", tools);
        assert!(plan_calls(&nothing).is_empty());
        let forced = plan_calls(&nothing.clone().with_tool_choice(ToolChoice::Required));
        assert_eq!(names(&forced), ["time"], "required: the first tool when none matched");
        assert_eq!(forced[0].arguments, json!({"query": "Hello there"}), "with the whole message");
        let named = plan_calls(&nothing.with_tool_choice(ToolChoice::Tool("news".into())));
        assert_eq!((names(&named), &named[0].arguments), (vec!["news"], &json!({"query": "Hello there"})));
    }

    #[test]
    fn only_a_user_message_last_leads_to_calls() {
        let mut request = ask("weather", vec![text_tool("weather")]);
        request.messages.push(Message::assistant("Sunny."));
        assert!(plan_calls(&request).is_empty());
        let mut after_results = ask("weather", vec![text_tool("weather")]).with_tool_choice(ToolChoice::Required);
        let call = ToolCall { id: "call_1".into(), name: "weather".into(), arguments: json!({}) };
        after_results.messages.push(Message { tool_calls: vec![call], ..Message::assistant("") });
        after_results.messages.push(Message::tool("call_1", "sunny"));
        assert!(plan_calls(&after_results).is_empty(), "after results it answers, even when a tool is required");
        assert!(plan_calls(&ask("weather", Vec::new())).is_empty());
    }

    #[test]
    fn numbers_booleans_and_defaults_fill_by_type() {
        let schema = json!({
            "type": "object",
            "properties": {
                "count": {"type": "integer"}, "ratio": {"type": "number"}, "exact": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}}, "label": {"type": "string"},
                "limit": {"type": "integer"}, "verbose": {"type": "boolean"}, "extra": {"type": "string"}
            },
            "required": ["count", "ratio", "exact", "tags", "label"]
        });
        let calls = plan_calls(&ask("repeat -12.5 times, then 3", vec![tool("repeat", schema.clone())]));
        assert_eq!(
            calls[0].arguments,
            json!({"count": -12, "ratio": -12.5, "exact": false, "tags": [], "label": "-12.5 times, then 3",
                   "limit": -12}),
            "optional: only the number the message supplies; no optional string or boolean"
        );
        let calls = plan_calls(&ask("repeat it", vec![tool("repeat", schema)]));
        assert_eq!(calls[0].arguments, json!({"count": 0, "ratio": 0, "exact": false, "tags": [], "label": "it"}));
        assert_eq!(first_number("x-2 and 7"), Some(FirstNumber { integer: Some(2), number: Some(2.into()) }));
        assert_eq!(first_number("99999999999999999999").map(|n| n.integer), Some(None), "too big for an integer");
        assert_eq!(first_number("no digits"), None);
        assert_eq!(first_number("v1.2.3").and_then(|n| n.number), Number::from_f64(1.2));
    }

    #[test]
    fn nested_optional_enum_and_nullable_fields_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "units": {"enum": ["celsius", "fahrenheit"]},
                "style": {"type": "string", "enum": ["short", "long"]},
                "days": {"type": ["integer", "null"]},
                "note": {"type": ["string", "null"]},
                "place": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "zip": {"type": "integer"}, "alias": {"type": "string"}},
                    "required": ["name"]
                },
                "options": {"anyOf": [{"type": "object", "properties": {"x": {"type": "string"}}}, {"type": "null"}]},
                "maybe": {"type": "object", "properties": {"y": {"type": "string"}}}
            },
            "required": ["city", "style", "days", "note", "place", "options"]
        });
        let forecast = tool("forecast", schema.clone());
        let calls = plan_calls(&ask("Forecast for Oslo in Fahrenheit", vec![forecast.clone()]));
        assert_eq!(
            calls[0].arguments,
            json!({"city": "Oslo in Fahrenheit", "units": "fahrenheit", "style": "short", "days": null, "note": null,
                   "place": {"name": "Oslo in Fahrenheit"}, "options": null})
        );
        let calls = plan_calls(&ask("forecast 5 days, long", vec![forecast]));
        assert_eq!(
            calls[0].arguments,
            json!({"city": "5 days, long", "style": "long", "days": 5, "note": null,
                   "place": {"name": "5 days, long", "zip": 5}, "options": null})
        );

        let strict = tool("forecast", schema).strict();
        let args = &plan_calls(&ask("forecast Oslo", vec![strict.clone()]))[0].arguments;
        assert_eq!(args["units"], "celsius", "strict mode made it required: its first value");
        assert_eq!(args["maybe"], json!({"y": "Oslo"}));
        assert!(lgadk_core::tool::check_arguments("forecast", &strict.parameters, args).is_ok(), "{args}");
    }

    #[test]
    fn schemas_that_are_not_objects_get_empty_arguments_and_deep_ones_stop() {
        let calls = plan_calls(&ask("ping", vec![tool("ping", json!({}))]));
        assert_eq!(calls[0].arguments, json!({}));
        let mut deep = json!({"type": "string"});
        for _ in 0..200 {
            deep = json!({"type": "object", "properties": {"inner": deep}, "required": ["inner"]});
        }
        let args = &plan_calls(&ask("dig", vec![tool("dig", deep)]))[0].arguments;
        let mut levels = 0;
        let mut at = args;
        while let Some(inner) = at.get("inner") {
            levels += 1;
            at = inner;
        }
        assert_eq!(levels, MAX_SCHEMA_DEPTH, "filled down to the limit, then left out");
    }

    #[test]
    fn tool_results_become_one_sentence_each() {
        let calls = vec![
            ToolCall { id: "call_1".into(), name: "calculator".into(), arguments: json!({}) },
            ToolCall { id: "call_2".into(), name: "lookup".into(), arguments: json!({}) },
        ];
        let mut messages = vec![Message::user("q"), Message { tool_calls: calls, ..Message::assistant("") }];
        assert_eq!(answer_from_results(&messages), None);
        messages.push(Message::tool("call_1", "14"));
        messages.push(Message::tool("call_2", "Paris is the capital of France."));
        messages.push(Message::tool("call_9", "  "));
        assert_eq!(
            answer_from_results(&messages).as_deref(),
            Some("[offline model] calculator: 14. lookup: Paris is the capital of France. tool: (no output).")
        );
    }
}
