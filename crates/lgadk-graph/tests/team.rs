//! Teams that do not add up are refused when built, before anything runs. The rules of a
//! running team are scenarios of the graph conformance suite (`lgadk_graph::testing`), which
//! runs on every backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failure is a panic")]

use std::sync::Arc;

use lgadk_core::{ChatModel, ChatState, Error};
use lgadk_graph::prebuilt::{Handoff, Team, ToolLoop};
use lgadk_graph::testing::ToolCallingModel;

fn agent(model: &Arc<ToolCallingModel>, name: &str) -> ToolLoop {
    ToolLoop::new(Arc::clone(model) as Arc<dyn ChatModel>).with_name(name)
}

#[tokio::test]
async fn a_team_that_does_not_add_up_is_refused_when_built() {
    let model = ToolCallingModel::new(Vec::<(&str, serde_json::Value)>::new());
    let cases = [
        (Team::new(), "at least one agent"),
        (Team::new().agent(agent(&model, "a")).agent(agent(&model, "a")), "two agents are named `a`"),
        (Team::new().agent(agent(&model, "a")).handoff("a", Handoff::to("b")), "not in the team"),
        (Team::new().agent(agent(&model, "a")).handoff("a", Handoff::to("a")), "to itself"),
        (Team::new().agent(agent(&model, "a b")), "ASCII letters"),
    ];
    for (team, expected) in cases {
        let err = team.graph::<ChatState>().map(|_| ()).unwrap_err();
        assert!(matches!(&err, Error::InvalidConfig { reason } if reason.contains(expected)), "{err:?}");
    }
}
