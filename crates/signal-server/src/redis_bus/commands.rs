//! Hub commands: queueing, pipelined EVALSHA calls, deadlines and failures.

use floe_signal::bus::{BusCommand, BusEvent};
use floe_signal::proto::LeaveReason;
use floe_signal::{ErrorCode, PeerId};
use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, Script, ServerErrorKind};
use tokio::time::Instant;

use super::{
    bus_error, is_connection_error, wire, Driver, Joining, COMMAND_DEADLINE, MAX_BATCH, PREFIX,
};

impl Driver {
    /// Queues a command from the hub. A leaving session stops being ours at once (it is not
    /// restored, and its `left` event does not evict it).
    pub(super) fn queue(&mut self, cmd: BusCommand) {
        if let BusCommand::Leave { session, .. } = &cmd {
            if let Some(l) = self.local.remove(session) {
                self.forget_local(&l.room);
            }
        }
        self.pending.push_back((cmd, Instant::now()));
    }

    /// Runs queued commands in order, up to [`MAX_BATCH`] per round trip (one pipeline of
    /// EVALSHA calls: Redis runs them in order, each one atomically). A connection error leaves
    /// the batch queued; a command Redis refuses fails alone.
    pub(super) async fn run_pending(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        self.expire_stale();
        while !self.pending.is_empty() {
            let n = self.pending.len().min(MAX_BATCH);
            let batch: Vec<BusCommand> = self
                .pending
                .iter()
                .take(n)
                .map(|(c, _)| c.clone())
                .collect();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            let mut sent = Vec::with_capacity(n);
            for cmd in batch {
                if let Some(c) = self.build(&cmd) {
                    pipe.add_command(c);
                    sent.push(cmd);
                }
            }
            let results: Vec<redis::RedisResult<redis::Value>> = match pipe.query_async(conn).await
            {
                Ok(r) => r,
                Err(e) if is_connection_error(&e) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "signalling: Redis refused a batch of directory commands");
                    sent.iter().map(|_| Err(e.clone())).collect()
                }
            };
            for (cmd, res) in sent.into_iter().zip(results) {
                match res {
                    Ok(_) => self.executed(&cmd),
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        // The script cache was flushed under us: load and run this one again.
                        self.load_scripts(conn).await?;
                        if let Some(c) = self.build(&cmd) {
                            match c.query_async::<redis::Value>(conn).await {
                                Ok(_) => self.executed(&cmd),
                                Err(e) if is_connection_error(&e) => return Err(e),
                                Err(_) => self.fail(cmd.clone(), op_name(&cmd)),
                            }
                        }
                    }
                    Err(e) if is_connection_error(&e) => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, op = op_name(&cmd), "signalling: Redis refused a directory command");
                        self.fail(cmd.clone(), op_name(&cmd));
                    }
                }
            }
            self.pending.drain(..n);
        }
        Ok(())
    }

    /// The EVALSHA call for `cmd` (`None`: nothing to run).
    fn build(&mut self, cmd: &BusCommand) -> Option<redis::Cmd> {
        let evalsha = |script: &Script| {
            let mut c = redis::cmd("EVALSHA");
            c.arg(script.get_hash()).arg(0).arg(PREFIX);
            c
        };
        match cmd {
            BusCommand::Join {
                room,
                peer,
                session,
                subscribe,
                max_peers,
            } => {
                self.joining.insert(
                    session.clone(),
                    Joining {
                        peer: peer.clone(),
                        subscribe: *subscribe,
                        executed: false,
                    },
                );
                let mut c = evalsha(&self.scripts.join);
                c.arg(room.as_str())
                    .arg(peer.as_str())
                    .arg(session.as_str())
                    .arg(&self.node)
                    .arg(u8::from(*subscribe))
                    .arg(*max_peers);
                Some(c)
            }
            BusCommand::Leave {
                room,
                peer,
                session,
                reason,
            } => {
                let mut c = evalsha(&self.scripts.leave);
                c.arg(room.as_str())
                    .arg(peer.as_str())
                    .arg(session.as_str())
                    .arg(reason_str(*reason))
                    .arg(&self.node);
                Some(c)
            }
            BusCommand::Send {
                room,
                from,
                origin,
                to,
                signal,
                ref_seq,
            } => {
                let Ok(msg) = serde_json::to_string(signal) else {
                    bus_error("send");
                    return None;
                };
                let mut c = evalsha(&self.scripts.send);
                c.arg(room.as_str())
                    .arg(from.as_str())
                    .arg(origin.as_str())
                    .arg(to.as_ref().map_or("", PeerId::as_str))
                    .arg(msg)
                    .arg(ref_seq.map(|s| s.to_string()).unwrap_or_default())
                    .arg(&self.node);
                Some(c)
            }
            BusCommand::Kick { room, origin, peer } => {
                let mut c = evalsha(&self.scripts.kick);
                c.arg(room.as_str())
                    .arg(origin.as_str())
                    .arg(peer.as_str())
                    .arg(&self.node);
                Some(c)
            }
            BusCommand::Register(r) => {
                let mut c = evalsha(&self.scripts.register);
                c.arg(r.session.as_str())
                    .arg(r.token.as_str())
                    .arg(wire::encode_perms(r.perms))
                    .arg(r.token_exp.map(|e| e.to_string()).unwrap_or_default())
                    .arg(r.resume_ttl_ms)
                    .arg(r.mailbox_max_msgs)
                    .arg(r.mailbox_max_bytes)
                    .arg(r.tenant.as_ref().map_or("", |t| t.as_str()));
                Some(c)
            }
            BusCommand::Ack { session, seq } => {
                let mut c = evalsha(&self.scripts.ack);
                c.arg(session.as_str()).arg(*seq);
                Some(c)
            }
            BusCommand::Resume {
                session,
                token,
                last_seq,
            } => {
                let mut c = evalsha(&self.scripts.resume);
                c.arg(session.as_str())
                    .arg(token.as_str())
                    .arg(*last_seq)
                    .arg(&self.node);
                Some(c)
            }
            other => {
                tracing::warn!(?other, "signalling: unknown bus command ignored");
                None
            }
        }
    }

    /// Bookkeeping after Redis ran `cmd`.
    fn executed(&mut self, cmd: &BusCommand) {
        if let BusCommand::Join { session, .. } = cmd {
            if let Some(j) = self.joining.get_mut(session) {
                j.executed = true;
            }
        }
    }

    /// Commands that waited longer than [`COMMAND_DEADLINE`] fail.
    pub(super) fn expire_stale(&mut self) {
        let now = Instant::now();
        while let Some((_, at)) = self.pending.front() {
            if now.duration_since(*at) < COMMAND_DEADLINE {
                break;
            }
            if let Some((cmd, _)) = self.pending.pop_front() {
                self.fail(cmd, "expired");
            }
        }
    }

    /// A command that could not run: a join is refused, anything else is dropped (counted).
    fn fail(&mut self, cmd: BusCommand, op: &'static str) {
        bus_error(op);
        match cmd {
            BusCommand::Join { session, .. } => {
                self.joining.remove(&session);
                self.emit(BusEvent::JoinRejected {
                    session,
                    code: ErrorCode::Internal,
                    message: "the room directory is unavailable; retry shortly".into(),
                });
            }
            BusCommand::Send { .. } => {
                tracing::debug!("signalling: routed message dropped, Redis unavailable");
            }
            BusCommand::Resume { session, .. } => {
                self.emit(BusEvent::ResumeRejected { session });
            }
            // A lost leave is purged when the node reconnects; a lost kick is reported nowhere.
            _ => {}
        }
    }
}

fn op_name(cmd: &BusCommand) -> &'static str {
    match cmd {
        BusCommand::Join { .. } => "join",
        BusCommand::Leave { .. } => "leave",
        BusCommand::Send { .. } => "send",
        BusCommand::Kick { .. } => "kick",
        BusCommand::Register(_) => "register",
        BusCommand::Ack { .. } => "ack",
        BusCommand::Resume { .. } => "resume",
        _ => "other",
    }
}

fn reason_str(r: LeaveReason) -> &'static str {
    match r {
        LeaveReason::Left => "left",
        LeaveReason::Timeout => "timeout",
        LeaveReason::Kicked => "kicked",
        LeaveReason::Expired => "expired",
        LeaveReason::Overflow => "overflow",
        LeaveReason::Shutdown => "shutdown",
        _ => "left",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leave_reasons_match_the_wire_names() {
        for r in [
            LeaveReason::Left,
            LeaveReason::Timeout,
            LeaveReason::Kicked,
            LeaveReason::Expired,
            LeaveReason::Overflow,
            LeaveReason::Shutdown,
        ] {
            let json = serde_json::to_string(&r).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", reason_str(r)));
        }
    }
}
