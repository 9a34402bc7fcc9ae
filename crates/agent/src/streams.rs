//! Exec, attach and log following on this host: the agent finds the group's supervisor and
//! opens the session there (the supervisor runs `crun exec` and relays the bytes).

use skiff_model::records::GroupRecord;
use skiff_runtime::{ClientError, Session, SupervisorClient};
use tokio::sync::mpsc;

use crate::Agent;

impl Agent {
    /// Run `command` in `container` of `rec` (with a terminal of (rows, cols) if `tty`).
    pub async fn exec(&self, rec: &GroupRecord, container: &str, command: Vec<String>, tty: Option<(u16, u16)>) -> Result<Session, ClientError> {
        let client = SupervisorClient::connect(&self.group_dir(&rec.uid)).await?;
        client.exec(container, command, tty).await
    }

    /// Stream the live output of `container` of `rec`.
    pub async fn attach(&self, rec: &GroupRecord, container: &str) -> Result<Session, ClientError> {
        let client = SupervisorClient::connect(&self.group_dir(&rec.uid)).await?;
        client.attach(container).await
    }

    /// Follow the log of `container` until it terminates: rendered chunks on the receiver.
    pub fn follow_logs(&self, rec: &GroupRecord, container: &str, tail: Option<usize>, timestamps: bool) -> mpsc::Receiver<Vec<u8>> {
        let (tx, rx) = mpsc::channel(16);
        let dir = self.group_dir(&rec.uid);
        tokio::spawn(skiff_runtime::follow::follow(dir, container.to_string(), tail, timestamps, tx));
        rx
    }
}
