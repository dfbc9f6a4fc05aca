//! Access: the caller as rules see it ([`Caller`]), the rules of every resource compiled
//! once ([`Policy`]), and what they decide for one operation ([`Decision`]) or refuse
//! ([`Refusal`]). Transports (REST, GraphQL, realtime, the admin UI) and the record
//! service all judge through this crate, so a rule cannot mean one thing over HTTP and
//! another elsewhere. It knows no transport: refusals are turned into 401/403 by whoever
//! answers.
#![forbid(unsafe_code)]

mod caller;
mod policy;

pub use caller::{Caller, Identity, Via};
pub use policy::{
    Action, Decision, JsonRecord, Judged, Policy, Refusal, auth_map, check_field_writes, decide,
    decide_as, judge_view, readable, readable_in_event, refusal, uses_auth,
};
