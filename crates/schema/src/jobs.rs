//! `[jobs.*]` and `[schedules.*]` of `schema.toml`: job types ferrobase delivers to a
//! service over HTTP, and cron schedules that enqueue them (SPEC §8, "Jobs").

use std::str::FromStr as _;
use std::time::Duration;

use serde_json::Value;
use toml_edit::{Item, TableLike};

use crate::parse::{Parser, item_span};
use crate::settings::parse_duration;

/// Names of the job kinds ferrobase runs itself; a declared job type may not take them.
pub const BUILTIN_JOBS: &[&str] = &["cleanup", "email"];

/// Longest queue, job type and schedule name.
const MAX_NAME: usize = 48;

const JOB_KEYS: &[&str] = &[
    "url",
    "secret",
    "timeout",
    "max_attempts",
    "backoff",
    "queue",
    "unique",
];
const SCHEDULE_KEYS: &[&str] = &["cron", "timezone", "job", "payload"];

/// A value written literally or read from the environment at start-up (`env:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigValue {
    /// The text as written.
    Literal(String),
    /// The variable to read.
    Env(String),
}

impl ConfigValue {
    pub(crate) fn parse(text: &str) -> Self {
        match text.strip_prefix("env:") {
            Some(var) => Self::Env(var.to_owned()),
            None => Self::Literal(text.to_owned()),
        }
    }

    /// The value, reading the environment through `env`; an error names the missing
    /// variable.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, String> {
        match self {
            Self::Literal(text) => Ok(text.clone()),
            Self::Env(var) => env(var)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("the environment variable {var} is not set")),
        }
    }
}

/// Retry delays: `min(cap, base * 2^(attempt-1))`, then ±10 % jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's delay.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Backoff {
    /// The delay after failed attempt `attempt` (1-based) before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// De-duplication of a job type: one job per key within a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unique {
    /// Where the key is: `payload` (the whole payload) or `payload.a.b`.
    pub key: Vec<String>,
    /// How long after enqueueing a job with this key another one returns it.
    pub period: Duration,
}

impl Unique {
    /// The key's value in `payload`, as text; `None` when the payload lacks it.
    pub fn key_of(&self, payload: &Value) -> Option<String> {
        let mut value = payload;
        for part in &self.key {
            value = value.get(part)?;
        }
        match value {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }
}

/// `[jobs.<name>]`: a job type, delivered as an HTTP `POST` to a service.
#[derive(Debug, Clone, PartialEq)]
pub struct JobType {
    /// The type's name (what `POST /api/v1/jobs` names in `type`).
    pub name: String,
    /// Where each job is delivered.
    pub url: ConfigValue,
    /// Signs every delivery (Standard Webhooks, `whsec_<base64>` or any text).
    pub secret: Option<ConfigValue>,
    /// How long one delivery may take.
    pub timeout: Duration,
    /// Attempts before the job is dead.
    pub max_attempts: u32,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// The queue it runs on (`ferrobase.toml` sets each queue's concurrency).
    pub queue: String,
    /// Optional de-duplication.
    pub unique: Option<Unique>,
}

/// `[schedules.<name>]`: enqueues a job at every tick of a cron expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The schedule's name.
    pub name: String,
    /// The expression as written (five fields, optional seconds, or `@daily` style).
    pub cron: String,
    /// The IANA time zone the expression is read in.
    pub timezone: String,
    /// The job type (or built-in kind) enqueued.
    pub job: String,
    /// The payload of each job.
    pub payload: Value,
}

impl Schedule {
    /// The parsed expression and zone. A schedule that passed `ferrobase check` always
    /// has them.
    pub fn parsed(&self) -> Result<(croner::Cron, chrono_tz::Tz), String> {
        let zone = chrono_tz::Tz::from_str(&self.timezone)
            .map_err(|_| format!("unknown time zone '{}'", self.timezone))?;
        Ok((parse_cron(&self.cron)?, zone))
    }
}

/// Parses a cron expression: five fields or six with seconds first, or an alias.
pub fn parse_cron(text: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("invalid cron expression '{text}': {e}"))
}

/// The tick after `after` (UTC), read in `zone`; `None` when the expression never fires
/// again.
pub fn next_tick(
    cron: &croner::Cron,
    zone: chrono_tz::Tz,
    after: time::OffsetDateTime,
) -> Option<time::OffsetDateTime> {
    let start = chrono::DateTime::from_timestamp(after.unix_timestamp(), after.nanosecond())?
        .with_timezone(&zone);
    let next = cron.find_next_occurrence(&start, false).ok()?;
    time::OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
}

/// The last tick at or before `at` (UTC), read in `zone`.
pub fn last_tick(
    cron: &croner::Cron,
    zone: chrono_tz::Tz,
    at: time::OffsetDateTime,
) -> Option<time::OffsetDateTime> {
    let start = chrono::DateTime::from_timestamp(at.unix_timestamp(), at.nanosecond())?
        .with_timezone(&zone);
    let previous = cron.find_previous_occurrence(&start, true).ok()?;
    time::OffsetDateTime::from_unix_timestamp(previous.timestamp()).ok()
}

/// A TOML item (inline or standard table, or a value) as JSON.
fn item_to_json(item: &Item) -> Option<Value> {
    match item {
        Item::Value(v) => crate::parse::toml_to_json(v),
        Item::Table(t) => Some(Value::Object(
            t.iter()
                .map(|(k, v)| Some((k.to_owned(), item_to_json(v)?)))
                .collect::<Option<_>>()?,
        )),
        _ => None,
    }
}

/// Whether `text` is an absolute `http` or `https` URL.
pub fn is_http_url(text: &str) -> bool {
    url::Url::parse(text).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
}

fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Parser<'_> {
    fn duration_value(&mut self, item: &Item, what: &str) -> Option<Duration> {
        let text = self.string_value(item, what)?;
        match parse_duration(&text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.error(item_span(item), format!("{what} must be longer than zero"));
                None
            }
            Err(e) => {
                self.error(item_span(item), format!("{what}: {e}"));
                None
            }
        }
    }

    fn checked_name(&mut self, table: &dyn TableLike, name: &str, what: &str) -> bool {
        if valid_name(name) {
            return true;
        }
        self.error_hint(
            Self::key_span(table, name),
            format!("invalid {what} name '{name}'"),
            format!(
                "use lower-case letters, digits and underscores, starting with a letter, at most {MAX_NAME} characters"
            ),
        );
        false
    }

    /// `[jobs]`: every job type.
    pub(crate) fn jobs(&mut self, item: &Item) -> Vec<JobType> {
        let Some(table) = self.table(item, "[jobs]") else {
            return Vec::new();
        };
        let mut jobs = Vec::new();
        for (name, item) in table.iter() {
            if !self.checked_name(table, name, "job type") {
                continue;
            }
            if BUILTIN_JOBS.contains(&name) {
                self.error(
                    Self::key_span(table, name),
                    format!("job type '{name}' is a built-in kind of ferrobase"),
                );
                continue;
            }
            if let Some(job) = self.job(name, item) {
                jobs.push(job);
            }
        }
        jobs
    }

    fn job(&mut self, name: &str, item: &Item) -> Option<JobType> {
        let what = format!("[jobs.{name}]");
        let table = self.table(item, &what)?;
        self.unknown_keys(table, JOB_KEYS, &what);
        let mut ok = true;
        let url = match table.get("url") {
            Some(item) => {
                let text = self.string_value(item, &format!("{what} url"))?;
                let value = ConfigValue::parse(&text);
                if let ConfigValue::Literal(url) = &value
                    && !is_http_url(url)
                {
                    self.error(
                        item_span(item),
                        format!("{what} url must be an http(s) URL or env:NAME"),
                    );
                    ok = false;
                }
                value
            }
            None => {
                self.error(item_span(item), format!("{what} needs a url"));
                return None;
            }
        };
        let secret = match table.get("secret") {
            Some(item) => Some(ConfigValue::parse(
                &self.string_value(item, &format!("{what} secret"))?,
            )),
            None => None,
        };
        let timeout = match table.get("timeout") {
            Some(item) => self.duration_value(item, &format!("{what} timeout"))?,
            None => Duration::from_secs(30),
        };
        let max_attempts = match table.get("max_attempts") {
            Some(item) => match item.as_integer() {
                Some(n @ 1..=1000) => n as u32,
                _ => {
                    self.error(
                        item_span(item),
                        format!("{what} max_attempts must be an integer from 1 to 1000"),
                    );
                    return None;
                }
            },
            None => 20,
        };
        let mut backoff = Backoff {
            base: Duration::from_secs(15),
            cap: Duration::from_secs(6 * 3600),
        };
        if let Some(item) = table.get("backoff") {
            let inner = self.table(item, &format!("{what} backoff"))?;
            self.unknown_keys(inner, &["base", "cap"], &format!("{what} backoff"));
            if let Some(base) = inner.get("base") {
                backoff.base = self.duration_value(base, &format!("{what} backoff.base"))?;
            }
            if let Some(cap) = inner.get("cap") {
                backoff.cap = self.duration_value(cap, &format!("{what} backoff.cap"))?;
            }
            if backoff.cap < backoff.base {
                self.error(
                    item_span(item),
                    format!("{what} backoff.cap must not be shorter than backoff.base"),
                );
                ok = false;
            }
        }
        let queue = match table.get("queue") {
            Some(item) => {
                let queue = self.string_value(item, &format!("{what} queue"))?;
                if !valid_name(&queue) {
                    self.error(
                        item_span(item),
                        format!("{what} queue '{queue}' is not a valid queue name"),
                    );
                    ok = false;
                }
                queue
            }
            None => "default".to_owned(),
        };
        let unique = match table.get("unique") {
            Some(item) => Some(self.unique(item, &what)?),
            None => None,
        };
        ok.then(|| JobType {
            name: name.to_owned(),
            url,
            secret,
            timeout,
            max_attempts,
            backoff,
            queue,
            unique,
        })
    }

    fn unique(&mut self, item: &Item, what: &str) -> Option<Unique> {
        let what = format!("{what} unique");
        let table = self.table(item, &what)?;
        self.unknown_keys(table, &["key", "period"], &what);
        let key = match table.get("key") {
            Some(item) => {
                let text = self.string_value(item, &format!("{what}.key"))?;
                let mut parts = text.split('.');
                if parts.next() != Some("payload") || text.split('.').any(str::is_empty) {
                    self.error(
                        item_span(item),
                        format!(
                            "{what}.key must be \"payload\" or a path like \"payload.invoice_id\""
                        ),
                    );
                    return None;
                }
                parts.map(str::to_owned).collect()
            }
            None => Vec::new(),
        };
        let period = match table.get("period") {
            Some(item) => self.duration_value(item, &format!("{what}.period"))?,
            None => {
                self.error(item_span(item), format!("{what} needs a period"));
                return None;
            }
        };
        Some(Unique { key, period })
    }

    /// `[schedules]`: every schedule; `jobs` are the declared job types' names.
    pub(crate) fn schedules(&mut self, item: &Item, jobs: &[String]) -> Vec<Schedule> {
        let Some(table) = self.table(item, "[schedules]") else {
            return Vec::new();
        };
        let mut schedules = Vec::new();
        for (name, item) in table.iter() {
            if !self.checked_name(table, name, "schedule") {
                continue;
            }
            if let Some(schedule) = self.schedule(name, item, jobs) {
                schedules.push(schedule);
            }
        }
        schedules
    }

    fn schedule(&mut self, name: &str, item: &Item, jobs: &[String]) -> Option<Schedule> {
        let what = format!("[schedules.{name}]");
        let table = self.table(item, &what)?;
        self.unknown_keys(table, SCHEDULE_KEYS, &what);
        let Some(cron_item) = table.get("cron") else {
            self.error(item_span(item), format!("{what} needs a cron expression"));
            return None;
        };
        let cron = self.string_value(cron_item, &format!("{what} cron"))?;
        let timezone = match table.get("timezone") {
            Some(item) => {
                let zone = self.string_value(item, &format!("{what} timezone"))?;
                if chrono_tz::Tz::from_str(&zone).is_err() {
                    self.error_hint(
                        item_span(item),
                        format!("{what} timezone '{zone}' is not a known time zone"),
                        "use an IANA name such as \"Europe/Berlin\" or \"UTC\"".to_owned(),
                    );
                    return None;
                }
                zone
            }
            None => "UTC".to_owned(),
        };
        let parsed = match parse_cron(&cron) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.error(item_span(cron_item), format!("{what} {e}"));
                return None;
            }
        };
        let zone = chrono_tz::Tz::from_str(&timezone).ok()?;
        // From a fixed instant, so `check` says the same on every day: an expression that
        // fires on no date at all (the 30th of February) is refused.
        let origin = time::macros::datetime!(2000-01-01 00:00 UTC);
        if next_tick(&parsed, zone, origin).is_none() {
            self.error(
                item_span(cron_item),
                format!("{what} cron '{cron}' never fires (no date matches it)"),
            );
            return None;
        }
        let Some(job_item) = table.get("job") else {
            self.error(item_span(item), format!("{what} needs a job"));
            return None;
        };
        let job = self.string_value(job_item, &format!("{what} job"))?;
        if !BUILTIN_JOBS.contains(&job.as_str()) && !jobs.contains(&job) {
            let known: Vec<&str> = jobs
                .iter()
                .map(String::as_str)
                .chain(BUILTIN_JOBS.iter().copied())
                .collect();
            let hint = crate::parse::suggest(&job, &known)
                .unwrap_or_else(|| format!("job types: {}", known.join(", ")));
            self.error_hint(
                item_span(job_item),
                format!("{what} names the unknown job type '{job}'"),
                hint,
            );
            return None;
        }
        let payload = match table.get("payload") {
            Some(item) => match item_to_json(item) {
                Some(value @ Value::Object(_)) => value,
                _ => {
                    self.error(item_span(item), format!("{what} payload must be a table"));
                    return None;
                }
            },
            None => Value::Object(Default::default()),
        };
        Some(Schedule {
            name: name.to_owned(),
            cron,
            timezone,
            job,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let b = Backoff {
            base: Duration::from_secs(15),
            cap: Duration::from_secs(100),
        };
        let delays: Vec<u64> = (1..=5).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(delays, [15, 30, 60, 100, 100]);
        assert_eq!(b.delay(200).as_secs(), 100, "no overflow");
    }

    #[test]
    fn ticks_follow_the_time_zone() {
        let cron = parse_cron("0 3 * * *").expect("cron");
        let zone = chrono_tz::Tz::from_str("Europe/Berlin").expect("zone");
        let at = time::macros::datetime!(2026-07-01 12:00 UTC);
        // 03:00 in Berlin in summer is 01:00 UTC.
        assert_eq!(
            next_tick(&cron, zone, at),
            Some(time::macros::datetime!(2026-07-02 01:00 UTC))
        );
        assert_eq!(
            last_tick(&cron, zone, at),
            Some(time::macros::datetime!(2026-07-01 01:00 UTC))
        );
        assert!(parse_cron("@hourly").is_ok());
        assert!(parse_cron("*/10 * * * * *").is_ok(), "seconds first");
        assert!(parse_cron("61 * * * *").is_err());
    }
}
