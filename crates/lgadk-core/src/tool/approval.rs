//! Approvals: the calls that wait for a reviewer, the reviewer's decisions, and the batch the
//! tool loop keeps in the state meanwhile.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::message::Message;

/// A tool call waiting for a reviewer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingApproval {
    /// The call's id: decisions name it.
    pub call_id: String,
    /// The tool.
    pub name: String,
    /// The arguments the model gave.
    pub arguments: Value,
}

/// The value of the interrupt the tool loop raises when calls need approval: every call of the
/// model's message that waits, at once. Read it from [`Error::Interrupted`]'s `value` with
/// [`ApprovalRequest::from_interrupt`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "tool_approval")]
pub struct ApprovalRequest {
    /// The waiting calls, in the order the model made them.
    pub pending: Vec<PendingApproval>,
}

impl ApprovalRequest {
    /// The approval request an interrupt carries, if it is one.
    pub fn from_interrupt(err: &Error) -> Option<Self> {
        match err {
            Error::Interrupted { value: Some(value), .. } => Self::deserialize(value).ok(),
            _ => None,
        }
    }
}

/// A reviewer's decision on one call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum ApprovalDecision {
    /// Run the call as the model made it.
    Approve,
    /// Do not run it; the model reads `reason`.
    Reject {
        /// Why, for the model.
        reason: String,
    },
    /// Run it with these arguments instead; the model is told they were changed.
    Edit {
        /// The arguments to run with.
        arguments: Value,
    },
}

/// Decisions for the pending calls of one batch, by call id: the value to resume with.
///
/// ```
/// use lgadk_core::serde_json::json;
/// use lgadk_core::tool::ApprovalDecisions;
///
/// let decisions = ApprovalDecisions::new().approve("call_1").reject("call_2", "not today");
/// assert_eq!(
///     decisions.into_value(),
///     json!({"call_1": {"decision": "approve"}, "call_2": {"decision": "reject", "reason": "not today"}})
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApprovalDecisions(pub BTreeMap<String, ApprovalDecision>);

impl ApprovalDecisions {
    /// No decisions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Approves call `call_id`.
    #[must_use]
    pub fn approve(self, call_id: impl Into<String>) -> Self {
        self.decide(call_id, ApprovalDecision::Approve)
    }

    /// Rejects call `call_id`, telling the model `reason`.
    #[must_use]
    pub fn reject(self, call_id: impl Into<String>, reason: impl Into<String>) -> Self {
        self.decide(call_id, ApprovalDecision::Reject { reason: reason.into() })
    }

    /// Runs call `call_id` with `arguments` instead of the model's.
    #[must_use]
    pub fn edit(self, call_id: impl Into<String>, arguments: Value) -> Self {
        self.decide(call_id, ApprovalDecision::Edit { arguments })
    }

    /// Records `decision` for call `call_id`.
    #[must_use]
    pub fn decide(mut self, call_id: impl Into<String>, decision: ApprovalDecision) -> Self {
        self.0.insert(call_id.into(), decision);
        self
    }

    /// The decisions as the resume value.
    pub fn into_value(self) -> Value {
        serde_json::to_value(self.0).unwrap_or_default()
    }
}

impl From<ApprovalDecisions> for Value {
    fn from(decisions: ApprovalDecisions) -> Self {
        decisions.into_value()
    }
}

/// A model message's tool calls that have not all finished: what ran already and what waits
/// for approval. The tool loop keeps it in the run's state while it is interrupted, so a
/// resume — in this process or another — runs only what is left and never a call twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolBatch {
    /// The ids of all the message's calls, in order.
    pub call_ids: Vec<String>,
    /// Results of the calls that finished (tool messages).
    pub finished: Vec<Message>,
    /// Calls waiting for a decision.
    pub awaiting: Vec<PendingApproval>,
}
