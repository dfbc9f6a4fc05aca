//! Email (SPEC §8, "Email"): sent as `email` jobs with retries, through SMTP (lettre,
//! with a timeout on every read and write of the conversation, not only on connect) or,
//! without `[email] smtp_url`, written to `data/outbox/` as `.eml` files. The account
//! mails (verification, password reset) have built-in text and HTML templates that
//! files in `templates/email/` replace.

use std::path::{Path, PathBuf};

use ferrobase_schema::settings::EmailSettings;
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
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

/// How mail leaves this node.
pub(crate) struct Mailer {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    /// lettre bounds only the connect: the whole conversation is bounded here.
    conversation: std::time::Duration,
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
        let transport = match &settings.smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| format!("[email] smtp_url: {e}"))?
                    .timeout(Some(settings.timeout))
                    .build(),
            ),
            None => None,
        };
        Ok(Self {
            transport,
            // Connect, greeting, EHLO, (STARTTLS, AUTH,) MAIL, RCPT, DATA: each within
            // the timeout, so the conversation within seven of them.
            conversation: settings.timeout.saturating_mul(7),
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
        match &self.transport {
            Some(transport) => {
                match tokio::time::timeout(self.conversation, transport.send(message)).await {
                    Ok(Ok(_)) => Ok(format!("sent to {}", to.email)),
                    Ok(Err(e)) => Err((format!("SMTP: {e}"), !e.is_permanent())),
                    Err(_) => Err((
                        format!(
                            "SMTP: the server did not finish the conversation within {} s",
                            self.conversation.as_secs()
                        ),
                        true,
                    )),
                }
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
