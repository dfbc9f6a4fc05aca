//! Reading one record under the view rule.

use ferrobase_access::{Action, Identity, decide};
use ferrobase_store::{Record, ResourceId};

use crate::{RecordError, Records};

impl Records {
    /// Record `id` (as the client wrote it), if the caller may see it (the view rule is part of the query: a record
    /// outside it is not found, never refused, so its existence does not leak).
    pub async fn get(
        &self,
        identity: &Identity,
        res: ResourceId,
        id: &str,
    ) -> Result<Record, RecordError> {
        let decision = decide(
            self.policy(res),
            self.resource_at(res),
            Action::View,
            identity,
            None,
            self.clock().now(),
        )?;
        let id = self.record_id(res, id)?;
        self.store()
            .records()
            .get(res, id, decision.into_condition())
            .await?
            .ok_or_else(|| self.not_found(res))
    }
}
