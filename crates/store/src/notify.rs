//! In-process change notification, one channel per account.

use std::collections::HashMap;
use std::sync::Mutex;

use bulwark_core::{ChangeNotice, PrincipalId};
use tokio::sync::broadcast;

/// Notices buffered per account before a slow subscriber is told it lagged
/// (it then re-reads the change log, so nothing is lost).
const CHANNEL_CAPACITY: usize = 64;

/// Fans durable changes out to subscribers of each account.
#[derive(Default)]
pub struct Notifier {
    channels: Mutex<HashMap<PrincipalId, broadcast::Sender<ChangeNotice>>>,
}

impl Notifier {
    /// Subscribes to one account.
    pub fn subscribe(&self, account: PrincipalId) -> broadcast::Receiver<ChangeNotice> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        channels
            .entry(account)
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe()
    }

    /// Publishes a notice; forgets accounts nobody listens to any more.
    pub fn publish(&self, notice: ChangeNotice) {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(sender) = channels.get(&notice.account) {
            let account = notice.account;
            if sender.send(notice).is_err() {
                channels.remove(&account);
            }
        }
    }
}
