//! [`PromptTemplate`]: text with `{placeholders}`, filled in per call.

use std::fmt;
use std::str::FromStr;

use lgadk_core::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(String),
}

/// Text with `{name}` placeholders, rendered with a value for every name.
///
/// - A placeholder is `{name}` with `name` made of ASCII letters, digits, `_`, `-` and `.`.
/// - `{{` and `}}` stand for literal braces, so JSON examples survive: `{{"a": 1}}`.
/// - A variable without a value is an error naming it; values may contain braces freely.
///
/// ```
/// use lgadk_llm::PromptTemplate;
///
/// let template = PromptTemplate::parse("As {persona}, answer: {input} (reply as {{\"answer\": ...}})")?;
/// let text = template.format(&[("persona", "a tutor"), ("input", "what is Rust?")])?;
/// assert_eq!(text, "As a tutor, answer: what is Rust? (reply as {\"answer\": ...})");
///
/// let missing = template.format(&[("input", "hi")]).unwrap_err();
/// assert!(missing.to_string().contains("`persona`"));
/// # Ok::<(), lgadk_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptTemplate {
    source: String,
    parts: Vec<Part>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')
}

fn invalid(source: &str, what: &str) -> Error {
    Error::InvalidConfig { reason: format!("prompt template {source:?}: {what}") }
}

impl PromptTemplate {
    /// Parses `source`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for an unclosed `{`, a lone `}`, an empty `{}` or a placeholder
    /// name with characters other than ASCII letters, digits, `_`, `-` and `.`.
    pub fn parse(source: impl Into<String>) -> Result<Self> {
        let source = source.into();
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(n) if is_name_char(n) => name.push(n),
                            Some(other) => {
                                return Err(invalid(
                                    &source,
                                    &format!(
                                        "character {other:?} in a placeholder name (write `{{{{` for a literal brace)"
                                    ),
                                ));
                            }
                            None => return Err(invalid(&source, "unclosed `{` (write `{{` for a literal brace)")),
                        }
                    }
                    if name.is_empty() {
                        return Err(invalid(&source, "empty placeholder `{}`"));
                    }
                    if !text.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut text)));
                    }
                    parts.push(Part::Var(name));
                }
                '}' => return Err(invalid(&source, "lone `}` (write `}}` for a literal brace)")),
                other => text.push(other),
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self { source, parts })
    }

    /// The template text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholder names, in order of first appearance, each once.
    pub fn variables(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for part in &self.parts {
            if let Part::Var(name) = part
                && !names.contains(&name.as_str())
            {
                names.push(name);
            }
        }
        names
    }

    /// Renders the template with `vars` (name, value) pairs; the first pair for a name wins.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first placeholder that has no value.
    pub fn format(&self, vars: &[(&str, &str)]) -> Result<String> {
        self.format_with(|name| vars.iter().find(|(key, _)| *key == name).map(|(_, value)| (*value).to_owned()))
    }

    /// Renders the template, asking `lookup` for each placeholder's value.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming the first placeholder for which `lookup` returns `None`.
    pub fn format_with(&self, mut lookup: impl FnMut(&str) -> Option<String>) -> Result<String> {
        let mut out = String::with_capacity(self.source.len());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(name) => match lookup(name) {
                    Some(value) => out.push_str(&value),
                    None => {
                        return Err(Error::InvalidConfig {
                            reason: format!("prompt template variable `{name}` has no value"),
                        });
                    }
                },
            }
        }
        Ok(out)
    }
}

impl FromStr for PromptTemplate {
    type Err = Error;

    fn from_str(source: &str) -> Result<Self> {
        Self::parse(source)
    }
}

impl fmt::Display for PromptTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_in() {
        let t = PromptTemplate::parse("Hi {name}, {name}! Topic: {topic}.").unwrap();
        assert_eq!(t.variables(), ["name", "topic"]);
        assert_eq!(t.format(&[("name", "Ada"), ("topic", "ML")]).unwrap(), "Hi Ada, Ada! Topic: ML.");
    }

    #[test]
    fn missing_variable_is_an_error_naming_it() {
        let t = PromptTemplate::parse("{a} and {b}").unwrap();
        let err = t.format(&[("a", "x")]).unwrap_err();
        assert!(matches!(&err, Error::InvalidConfig { reason } if reason.contains("`b`")), "{err}");
    }

    #[test]
    fn doubled_braces_are_literal_and_values_are_not_reparsed() {
        let t = PromptTemplate::parse("{{\"q\": \"{q}\"}}").unwrap();
        assert_eq!(t.variables(), ["q"]);
        assert_eq!(t.format(&[("q", "{not a var}")]).unwrap(), "{\"q\": \"{not a var}\"}");
        assert_eq!(t.to_string(), "{{\"q\": \"{q}\"}}");
    }

    #[test]
    fn malformed_templates_are_rejected() {
        for bad in ["{unclosed", "lone } brace", "{}", "{with space}", "{a{b}"] {
            let err = PromptTemplate::parse(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{bad}: {err}");
        }
        assert!("plain text".parse::<PromptTemplate>().unwrap().variables().is_empty());
    }
}
