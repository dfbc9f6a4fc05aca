//! New accounts: registration by a visitor and creation from the command line. Both are
//! creates of the users resource that no create rule judges (nobody is signed in yet);
//! a visitor's profile fields still answer to their field write rules.

use std::collections::BTreeMap;

use ferrobase_access::{Identity, check_field_writes};
use ferrobase_schema::input::{WriteContext, for_create};
use ferrobase_schema::validate::format_datetime;
use ferrobase_store::{EventOp, NewRecord, Record, ResourceId};
use serde_json::{Map, Value};

use crate::{RecordError, Records};

/// Who is creating the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registrant {
    /// A visitor registering themself: field write rules apply to them, the role is the
    /// default one.
    Visitor,
    /// An operator at the command line: no rules; any role of the schema.
    Operator,
}

/// A checked new account, waiting for its password's hash (which takes long enough to
/// be computed elsewhere).
#[derive(Debug)]
pub struct NewAccount {
    res: ResourceId,
    values: Vec<Value>,
    now: String,
    id: String,
}

impl NewAccount {
    /// The new user's id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Records {
    /// The users resource.
    pub fn users(&self) -> (ResourceId, &ferrobase_schema::Resource) {
        let schema = self.schema();
        schema
            .resources
            .iter()
            .position(|r| r.is_users())
            .map_or((ResourceId(0), &schema.resources[0]), |i| {
                (ResourceId(i), &schema.resources[i])
            })
    }

    /// Checks a new account's fields (`email` and the profile; not the password):
    /// validation as for any create, the email lowercased (one account per address,
    /// whatever its case), and for a visitor the write rules of the fields they set.
    /// `errors` are problems the caller found already (the password's length); they are
    /// reported together with the fields'.
    pub fn plan_account(
        &self,
        registrant: Registrant,
        body: Map<String, Value>,
        mut errors: BTreeMap<String, Vec<String>>,
    ) -> Result<NewAccount, RecordError> {
        let (res, users) = self.users();
        let now_time = self.clock().now();
        let now = format_datetime(now_time);
        let ctx = WriteContext {
            auth_id: None,
            now: &now,
        };
        let written = crate::write::fields_in(users, &body);
        let profile = (registrant == Registrant::Visitor).then(|| body.clone());
        let mut values = match for_create(users, body, &ctx) {
            Ok(values) if errors.is_empty() => values,
            Ok(_) => return Err(RecordError::Invalid(errors)),
            Err(e) => {
                errors.extend(e);
                return Err(RecordError::Invalid(errors));
            }
        };
        if let Some(i) = users.fields.iter().position(|f| f.name == "email") {
            values[i] = values[i]
                .as_str()
                .map_or(Value::Null, |e| Value::String(e.to_lowercase()));
        }
        if let Some(profile) = profile {
            // A registering visitor is anonymous: profile fields with write rules apply.
            check_field_writes(
                self.policy(res),
                users,
                written.into_iter(),
                &values,
                "",
                &Identity(None),
                &profile,
                now_time,
            )?;
        }
        Ok(NewAccount {
            res,
            values,
            now,
            id: uuid::Uuid::now_v7().to_string(),
        })
    }

    /// Marks a user's address as verified (the verification flow): an update of the
    /// users record with its event and effects. `false` when the user is gone.
    pub async fn mark_verified(&self, user_id: &str) -> Result<bool, RecordError> {
        self.set_account_field(user_id, "verified", Value::Bool(true))
            .await
    }

    /// Replaces a user's password hash (a change, a reset, a rehash at sign-in): an
    /// update of the users record with its event (the hash itself is hidden, never in
    /// the log) and effects. `false` when the user is gone.
    pub async fn set_password_hash(
        &self,
        user_id: &str,
        hash: String,
    ) -> Result<bool, RecordError> {
        self.set_account_field(user_id, "password_hash", Value::String(hash))
            .await
    }

    /// Sets one built-in field of a user, written by the user themself.
    async fn set_account_field(
        &self,
        user_id: &str,
        name: &str,
        value: Value,
    ) -> Result<bool, RecordError> {
        let (res, users) = self.users();
        let Some(field) = users.fields.iter().position(|f| f.name == name) else {
            return Ok(false);
        };
        let update = ferrobase_store::Update {
            now: format_datetime(self.clock().now()),
            changes: vec![(field, ferrobase_schema::input::Change::Set(value))],
            if_match: None,
            guard: None,
            targets: Default::default(),
            actor: Some(user_id.to_owned()),
        };
        let updated = self
            .store()
            .records()
            .update(res, user_id.to_owned(), update, Default::default())
            .await
            .map_err(RecordError::Store);
        match updated {
            Ok(None) => Ok(false),
            Ok(Some(record)) => {
                self.settle(res, EventOp::Update, Ok(record.id)).await;
                Ok(true)
            }
            Err(e) => {
                self.settle(res, EventOp::Update, Err(&e)).await;
                Err(e)
            }
        }
    }

    /// Stores a checked account with its password hash (and, from an operator, its
    /// role); the write has its event and its effects like any other.
    pub async fn create_account(
        &self,
        account: NewAccount,
        password_hash: String,
        role: Option<&str>,
    ) -> Result<Record, RecordError> {
        let NewAccount {
            res,
            mut values,
            now,
            id,
        } = account;
        let users = self.resource_at(res);
        let mut set = |name: &str, value: Value| {
            if let Some(i) = users.fields.iter().position(|f| f.name == name) {
                values[i] = value;
            }
        };
        set("password_hash", Value::String(password_hash));
        if let Some(role) = role {
            set("role", Value::String(role.to_owned()));
        }
        let stored = self
            .store()
            .records()
            .insert(
                res,
                NewRecord {
                    // Registering is the new user's own write.
                    actor: Some(id.clone()),
                    id,
                    now,
                    values,
                    targets: Default::default(),
                },
                None,
            )
            .await
            .map_err(RecordError::Store);
        self.settle(res, EventOp::Create, stored.as_ref().map(|r| r.id.clone()))
            .await;
        stored
    }
}
