//! The checks every provider applies to a request's `tool_choice` before answering it.

use lgadk_core::{ChatRequest, Error, Result, ToolChoice};

/// Refuses a `tool_choice` no model could honour: [`ToolChoice::Required`] without tools, or
/// [`ToolChoice::Tool`] naming a tool the request does not offer. OpenAI answers both with a
/// 400; failing here says which tool was missing without a round trip, and the offline model
/// refuses them the same way.
///
/// # Errors
/// [`Error::InvalidConfig`].
pub(crate) fn check(request: &ChatRequest) -> Result<()> {
    match &request.tool_choice {
        Some(ToolChoice::Required) if request.tools.is_empty() => {
            Err(Error::InvalidConfig { reason: "tool_choice is `required` but the request offers no tools".to_owned() })
        }
        Some(ToolChoice::Tool(name)) if !request.tools.iter().any(|t| &t.name == name) => {
            let offered = request.tools.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ");
            let offered = if offered.is_empty() { "none".to_owned() } else { offered };
            Err(Error::InvalidConfig {
                reason: format!(
                    "tool_choice names the tool `{name}`, which the request does not offer (offered: {offered})"
                ),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use lgadk_core::{Message, ToolSpec};

    use super::*;

    #[test]
    fn only_choices_no_model_can_honour_are_refused() {
        let tool = ToolSpec::new("lookup", "", serde_json::json!({"type": "object"}));
        let bare = ChatRequest::new(vec![Message::user("hi")]);
        let offered = bare.clone().with_tools(vec![tool]);
        for choice in [ToolChoice::Auto, ToolChoice::None, ToolChoice::Required, ToolChoice::Tool("lookup".into())] {
            assert!(check(&offered.clone().with_tool_choice(choice.clone())).is_ok(), "{choice:?}");
        }
        assert!(check(&bare.clone().with_tool_choice(ToolChoice::Auto)).is_ok());
        assert!(check(&bare.clone().with_tool_choice(ToolChoice::None)).is_ok());
        let err = check(&bare.clone().with_tool_choice(ToolChoice::Required)).unwrap_err();
        assert!(matches!(&err, Error::InvalidConfig { reason } if reason.contains("no tools")), "{err}");
        let err = check(&offered.with_tool_choice(ToolChoice::Tool("search".into()))).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig { reason } if reason.contains("`search`") && reason.contains("lookup")),
            "{err}"
        );
        let err = check(&bare.with_tool_choice(ToolChoice::Tool("search".into()))).unwrap_err();
        assert!(matches!(&err, Error::InvalidConfig { reason } if reason.contains("offered: none")), "{err}");
    }
}
