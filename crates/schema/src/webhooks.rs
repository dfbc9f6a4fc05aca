//! `[webhooks.*]` of `schema.toml`: deliveries of record events to other systems
//! (SPEC §8, "Webhooks").

use std::time::Duration;

use toml_edit::Item;

use crate::jobs::{ConfigValue, is_http_url};
use crate::model::{Rule, Schema};
use crate::parse::{Parser, item_span};
use crate::settings::parse_duration;

const WEBHOOK_KEYS: &[&str] = &[
    "resource",
    "events",
    "filter",
    "url",
    "secret",
    "retry_schedule",
];
const EVENTS: &[&str] = &["create", "update", "delete"];

/// `[webhooks.<name>]`: matching events of a resource are delivered to a URL.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// The webhook's name.
    pub name: String,
    /// The resource whose events it delivers.
    pub resource: String,
    /// Which operations: create, update, delete (all when not given).
    pub events: Vec<String>,
    /// Only events whose record satisfies this expression (the previous record for a
    /// delete).
    pub filter: Option<Rule>,
    /// Where deliveries go.
    pub url: ConfigValue,
    /// Signs every delivery (`whsec_<base64>`).
    pub secret: Option<ConfigValue>,
    /// Delays between attempts; `[webhooks] retry_schedule` of ferrobase.toml when not
    /// given.
    pub retry_schedule: Option<Vec<Duration>>,
}

impl Parser<'_> {
    /// `[webhooks]`: every webhook of `schema`'s resources.
    pub(crate) fn webhooks(&mut self, item: &Item, schema: &Schema) -> Vec<Webhook> {
        let Some(table) = self.table(item, "[webhooks]") else {
            return Vec::new();
        };
        let mut hooks = Vec::new();
        for (name, item) in table.iter() {
            if !self.name(name, Self::key_span(table, name), "webhook") {
                continue;
            }
            if let Some(hook) = self.webhook(name, item, schema) {
                hooks.push(hook);
            }
        }
        hooks
    }

    fn webhook(&mut self, name: &str, item: &Item, schema: &Schema) -> Option<Webhook> {
        let what = format!("[webhooks.{name}]");
        let table = self.table(item, &what)?;
        self.unknown_keys(table, WEBHOOK_KEYS, &what);
        let Some(resource_item) = table.get("resource") else {
            self.error(item_span(item), format!("{what} needs a resource"));
            return None;
        };
        let resource = self.string_value(resource_item, &format!("{what} resource"))?;
        if schema.resource(&resource).is_none() {
            let known: Vec<&str> = schema.resources.iter().map(|r| r.name.as_str()).collect();
            let hint = crate::parse::suggest(&resource, &known)
                .unwrap_or_else(|| format!("resources: {}", known.join(", ")));
            self.error_hint(
                item_span(resource_item),
                format!("{what} names the unknown resource '{resource}'"),
                hint,
            );
            return None;
        }
        let events = match table.get("events") {
            None => EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            Some(item) => {
                let list: Option<Vec<String>> = item.as_array().map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                });
                match list {
                    Some(list)
                        if !list.is_empty()
                            && list.iter().all(|e| EVENTS.contains(&e.as_str())) =>
                    {
                        list
                    }
                    _ => {
                        self.error(
                            item_span(item),
                            format!(
                                "{what} events must list some of \"create\", \"update\", \"delete\""
                            ),
                        );
                        return None;
                    }
                }
            }
        };
        let filter = match table.get("filter") {
            Some(item) => Some(self.rule(item, &format!("{what} filter"))?),
            None => None,
        };
        let Some(url_item) = table.get("url") else {
            self.error(item_span(item), format!("{what} needs a url"));
            return None;
        };
        let url = ConfigValue::parse(&self.string_value(url_item, &format!("{what} url"))?);
        if let ConfigValue::Literal(text) = &url
            && !is_http_url(text)
        {
            self.error(
                item_span(url_item),
                format!("{what} url must be an http(s) URL or env:NAME"),
            );
            return None;
        }
        let secret = match table.get("secret") {
            Some(item) => Some(ConfigValue::parse(
                &self.string_value(item, &format!("{what} secret"))?,
            )),
            None => None,
        };
        let retry_schedule = match table.get("retry_schedule") {
            None => None,
            Some(item) => {
                let delays: Option<Vec<Duration>> = item.as_array().and_then(|a| {
                    a.iter()
                        .map(|v| v.as_str().and_then(|s| parse_duration(s).ok()))
                        .collect()
                });
                match delays {
                    Some(d) if !d.is_empty() && d.len() <= 50 && d.iter().all(|d| !d.is_zero()) => {
                        Some(d)
                    }
                    _ => {
                        self.error(
                            item_span(item),
                            format!("{what} retry_schedule must list 1 to 50 delays like [\"5s\", \"5m\"]"),
                        );
                        return None;
                    }
                }
            }
        };
        Some(Webhook {
            name: name.to_owned(),
            resource,
            events,
            filter,
            url,
            secret,
            retry_schedule,
        })
    }
}
