//! Email (SPEC §8, "Email"): sent as `email` jobs with retries, through SMTP (lettre's
//! connection, driven phase by phase here: connect, greeting and EHLO, STARTTLS, AUTH,
//! MAIL, RCPT, DATA, the message, each within `[email] timeout`, because lettre's own
//! transport bounds only the connect) or,
//! without `[email] smtp_url`, written to `data/outbox/` as `.eml` files. The account
//! mails (verification, password reset) have built-in text and HTML templates that
//! files in `templates/email/` replace.

use std::path::{Path, PathBuf};

use ferrobase_schema::settings::EmailSettings;
use std::time::Duration;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use serde_json::{Value, json};

use crate::{JobError, Jobs};

/// The job kind of a mail.
pub const EMAIL: &str = "email";

/// The account mails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    /// "Confirm your address" (`verify`).
    Verify,
    /// "Reset your password" (`reset`).
    Reset,
}

impl Template {
    fn name(self) -> &'static str {
        match self {
            Self::Verify => "verify",
            Self::Reset => "reset",
        }
    }

    fn builtin(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::Verify => (
                "Confirm your email address",
                "Hello,\n\nconfirm that {{email}} is your address by opening this link (valid for 24 hours):\n\n{{link}}\n\nIf you did not create an account, ignore this mail.\n",
                "<!doctype html><html><body><p>Hello,</p><p>confirm that {{email}} is your address by opening this link (valid for 24 hours):</p><p><a href=\"{{link}}\">{{link}}</a></p><p>If you did not create an account, ignore this mail.</p></body></html>\n",
            ),
            Self::Reset => (
                "Reset your password",
                "Hello,\n\nsomeone asked to reset the password of {{email}}. To choose a new one, open this link (valid for 1 hour):\n\n{{link}}\n\nIf it was not you, ignore this mail; your password stays as it is.\n",
                "<!doctype html><html><body><p>Hello,</p><p>someone asked to reset the password of {{email}}. To choose a new one, open this link (valid for 1 hour):</p><p><a href=\"{{link}}\">{{link}}</a></p><p>If it was not you, ignore this mail; your password stays as it is.</p></body></html>\n",
            ),
        }
    }
}

/// Escapes text for HTML.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// TLS from the first byte (`smtps://`).
    Wrapper,
    /// `STARTTLS` required (`smtp://...?tls=required`).
    StartTls,
    /// None (`smtp://` to a loopback host outside production).
    Plain,
}

/// The SMTP server of `[email] smtp_url`.
#[derive(Debug, Clone)]
struct Smtp {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    /// The limit on each phase of the conversation.
    timeout: Duration,
}

impl Smtp {
    fn parse(url: &str, timeout: Duration) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("[email] smtp_url: {e}"))?;
        let starttls = parsed
            .query_pairs()
            .any(|(k, v)| k == "tls" && (v == "required" || v == "opportunistic"));
        let security = match parsed.scheme() {
            "smtps" => Security::Wrapper,
            "smtp" if starttls => Security::StartTls,
            "smtp" => Security::Plain,
            other => return Err(format!("[email] smtp_url: unknown scheme {other}")),
        };
        let host = parsed
            .host_str()
            .ok_or("[email] smtp_url: no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed.port().unwrap_or(match security {
            Security::Wrapper => 465,
            Security::StartTls => 587,
            Security::Plain => 25,
        });
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let credentials = (!parsed.username().is_empty()).then(|| {
            Credentials::new(
                decode(parsed.username()),
                decode(parsed.password().unwrap_or_default()),
            )
        });
        Ok(Self {
            host,
            port,
            security,
            credentials,
            timeout,
        })
    }

    /// One phase of the conversation, bounded by the timeout.
    async fn phase<T>(
        &self,
        what: &str,
        step: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, (String, bool)> {
        match tokio::time::timeout(self.timeout, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err((format!("SMTP {what}: {e}"), !e.is_permanent())),
            Err(_) => Err((
                format!(
                    "SMTP {what}: no answer within {} ms",
                    self.timeout.as_millis()
                ),
                true,
            )),
        }
    }

    /// Sends one message: connect, greeting and EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA
    /// and the message, QUIT, each phase within the timeout.
    async fn send(
        &self,
        to: &Mailbox,
        from: &Mailbox,
        message: &Message,
    ) -> Result<(), (String, bool)> {
        let tls = |host: &str| {
            TlsParameters::new(host.to_owned()).map_err(|e| (format!("SMTP TLS: {e}"), false))
        };
        let hello = ClientId::default();
        let wrapper = match self.security {
            Security::Wrapper => Some(tls(&self.host)?),
            _ => None,
        };
        let mut conn = self
            .phase(
                "connect",
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(self.timeout),
                    &hello,
                    wrapper,
                    None,
                ),
            )
            .await?;
        if self.security == Security::StartTls {
            let params = tls(&self.host)?;
            self.phase("STARTTLS", conn.starttls(params, &hello))
                .await?;
        }
        if let Some(credentials) = &self.credentials {
            self.phase(
                "AUTH",
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials),
            )
            .await?;
        }
        self.phase(
            "MAIL",
            conn.command(Mail::new(Some(from.email.clone()), vec![])),
        )
        .await?;
        self.phase("RCPT", conn.command(Rcpt::new(to.email.clone(), vec![])))
            .await?;
        self.phase("DATA", conn.command(Data)).await?;
        self.phase("message", conn.message(&message.formatted()))
            .await?;
        let _ = self.phase("QUIT", conn.quit()).await;
        Ok(())
    }
}

/// How mail leaves this node.
pub(crate) struct Mailer {
    smtp: Option<Smtp>,
    from: Mailbox,
    outbox: PathBuf,
    templates: PathBuf,
    link_base: String,
}

impl Mailer {
    /// The mailer of `settings`; `project` holds `templates/email/`, `outbox` the
    /// development outbox.
    pub(crate) fn new(
        settings: &EmailSettings,
        project: &Path,
        outbox: PathBuf,
    ) -> Result<Self, String> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| format!("[email] from: {e}"))?;
        let smtp = settings
            .smtp_url
            .as_deref()
            .map(|url| Smtp::parse(url, settings.timeout))
            .transpose()?;
        Ok(Self {
            smtp,
            from,
            outbox,
            templates: project.join("templates").join("email"),
            link_base: settings.link_base.clone(),
        })
    }

    /// `(subject, text, html)` of a mail to `email` carrying `link`.
    fn render(&self, template: Template, email: &str, link: &str) -> (String, String, String) {
        let (subject, text, html) = template.builtin();
        let read = |ext: &str, builtin: &str| {
            std::fs::read_to_string(self.templates.join(format!("{}.{ext}", template.name())))
                .unwrap_or_else(|_| builtin.to_owned())
        };
        let text = read("txt", text)
            .replace("{{email}}", email)
            .replace("{{link}}", link);
        let html = read("html", html)
            .replace("{{email}}", &html_escape(email))
            .replace("{{link}}", &html_escape(link));
        (subject.to_owned(), text, html)
    }

    async fn send(&self, id: &str, payload: &Value) -> Result<String, (String, bool)> {
        let field = |name: &str| payload[name].as_str().unwrap_or_default().to_owned();
        let to: Mailbox = field("to")
            .parse()
            .map_err(|e| (format!("invalid recipient: {e}"), false))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to.clone())
            .subject(field("subject"))
            .multipart(MultiPart::alternative_plain_html(
                field("text"),
                field("html"),
            ))
            .map_err(|e| (format!("cannot build the mail: {e}"), false))?;
        match &self.smtp {
            Some(smtp) => {
                smtp.send(&to, &self.from, &message).await?;
                Ok(format!("sent to {}", to.email))
            }
            None => {
                std::fs::create_dir_all(&self.outbox)
                    .map_err(|e| (format!("cannot create the outbox: {e}"), true))?;
                let path = self.outbox.join(format!("{id}.eml"));
                std::fs::write(&path, message.formatted())
                    .map_err(|e| (format!("cannot write {}: {e}", path.display()), true))?;
                tracing::info!(to = %to.email, path = %path.display(), "mail written to the outbox (no [email] smtp_url)");
                Ok(format!("written to {}", path.display()))
            }
        }
    }
}

impl Jobs {
    /// Enqueues an account mail to `email` whose link carries `token` to `page` of the
    /// app (`<link_base>/<page>?token=...`).
    pub async fn send_account_mail(
        &self,
        template: Template,
        email: &str,
        page: &str,
        token: &str,
    ) -> Result<(), JobError> {
        let link = format!("{}/{page}?token={token}", self.0.mailer.link_base);
        let (subject, text, html) = self.0.mailer.render(template, email, &link);
        let payload = json!({ "to": email, "subject": subject, "text": text, "html": html });
        let now = self.now();
        self.insert(EMAIL, "default", payload, 10, now, 8, None, None)
            .await
            .map(|_| ())
    }

    /// Sends one mail job.
    pub(crate) async fn send_mail(&self, job: &ferrobase_store::Job) -> ferrobase_store::Finish {
        match self.0.mailer.send(&job.id, &job.payload).await {
            Ok(done) => ferrobase_store::Finish::Completed(Some(json!({ "delivery": done }))),
            Err((error, retry)) => self.failure(job, error, retry, self.now()),
        }
    }
}
