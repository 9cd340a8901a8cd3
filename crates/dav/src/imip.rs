//! iMIP in (RFC 6047): calendar messages that arrive by mail for a local
//! user are applied to their calendar, as a client on their desk would.
//!
//! * REQUEST and CANCEL count only when the message's `From:` is the
//!   event's organizer and the recipient is one of its attendees.
//! * REPLY counts only when `From:` is the one attendee it answers for,
//!   and the recipient organises that event here.
//!
//! Anything else is left as an ordinary email. Mail from other domains has
//! been through SPF/DKIM/DMARC checks at the MX before it gets here.

use bulwark_audit::Actor;
use bulwark_core::PrincipalId;
use bulwark_store::{Error as StoreError, Principal};
use mail_parser::{MessageParser, MimeHeaders};

use crate::itip::Itip;
use crate::{Caller, Dav, ical};

/// Largest calendar part considered, bytes.
const MAX_CALENDAR_PART: usize = 1024 * 1024;
/// Most calendar parts looked at in one message.
const MAX_PARTS: usize = 4;

/// The `From:` address and the text/calendar parts of a message.
fn calendar_parts(message: &[u8]) -> Option<(String, Vec<String>)> {
    let parsed = MessageParser::default().parse(message)?;
    let from = parsed
        .from()?
        .first()?
        .address()?
        .trim()
        .to_ascii_lowercase();
    let parts = parsed
        .parts
        .iter()
        .filter(|p| {
            p.content_type().is_some_and(|ct| {
                ct.ctype().eq_ignore_ascii_case("text")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("calendar"))
            })
        })
        .filter_map(|p| p.text_contents().map(str::to_string))
        .filter(|t| t.len() <= MAX_CALENDAR_PART)
        .take(MAX_PARTS)
        .collect();
    Some((from, parts))
}

impl Dav {
    /// Applies the calendar messages in `message`, just delivered to
    /// `account`'s Inbox. Errors are logged; the email stays either way.
    pub async fn apply_imip(&self, account: PrincipalId, message: &[u8]) {
        let Some((from, parts)) = calendar_parts(message) else {
            return;
        };
        if parts.is_empty() {
            return;
        }
        let found = self.store().run(move |b| b.principal(account)).await;
        let recipient = match found {
            Ok(Some(p)) if p.kind.has_account() => p,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the recipient of a calendar message");
                return;
            }
        };
        for text in parts {
            if let Err(e) = self.apply_one(&recipient, &from, &text).await {
                tracing::warn!(error = %e, account = account.0, "cannot apply a calendar message");
            }
        }
    }

    async fn apply_one(
        &self,
        recipient: &Principal,
        from: &str,
        text: &str,
    ) -> Result<(), StoreError> {
        let itip = Itip::parse(text);
        let Some(method) = itip.method() else {
            return Ok(());
        };
        let Some(uid) = itip.uid() else {
            return Ok(());
        };
        // The object as it would be stored: validated like a client PUT.
        let mut stored = itip.clone();
        stored.set_method(None);
        if ical::check_calendar(&stored.render(), "").is_err() {
            tracing::info!(%from, "calendar message with invalid data ignored");
            return Ok(());
        }
        let caller = Caller {
            user: recipient,
            actor: Actor::system("imip"),
        };
        let mine = self.addresses(recipient).await?;
        let organizer = itip.organizer();
        match method.as_str() {
            "REQUEST" | "CANCEL" => {
                let Some(organizer) = organizer.filter(|o| o == from) else {
                    tracing::info!(%from, "calendar request not from its organizer ignored");
                    return Ok(());
                };
                let Some(me) = itip
                    .attendees()
                    .into_iter()
                    .find(|a| mine.contains(&a.address))
                    .map(|a| a.address)
                else {
                    return Ok(());
                };
                if mine.contains(&organizer) {
                    return Ok(());
                }
                if method == "CANCEL" {
                    self.cancel_for(&caller, &organizer, &me, &uid, &stored)
                        .await
                } else {
                    self.deliver_copy_retrying(&caller, recipient, &me, &uid, &stored)
                        .await
                        .map(|_| ())
                }
            }
            "REPLY" => {
                let Some(answer) = itip.attendees().into_iter().find(|a| a.address == from) else {
                    tracing::info!(%from, "calendar reply not from its attendee ignored");
                    return Ok(());
                };
                if !organizer.is_some_and(|o| mine.contains(&o)) {
                    return Ok(());
                }
                self.record_answer(
                    &caller,
                    recipient,
                    &uid,
                    &answer.address,
                    &answer.partstat,
                    &itip,
                )
                .await
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_calendar_parts_and_sender() {
        let message =
            b"From: Bob <Bob@Elsewhere.example>\r\nTo: alice@example.test\r\nSubject: x\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nHello\r\n--b\r\nContent-Type: text/calendar; method=REPLY\r\n\
Content-Transfer-Encoding: base64\r\n\r\nQkVHSU46VkNBTEVOREFS\r\n--b--\r\n";
        let (from, parts) = calendar_parts(message).expect("parsed");
        assert_eq!(from, "bob@elsewhere.example");
        assert_eq!(parts, vec!["BEGIN:VCALENDAR".to_string()]);
        assert!(calendar_parts(b"Subject: no from\r\n\r\nx").is_none());
    }
}
