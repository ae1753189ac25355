//! Limits with memory: the per-IP join limiter (and its pruning) and the answer to a
//! rate-limited message.

use std::net::IpAddr;
use std::time::Duration;

use super::state::{ReplyTo, Timer};
use super::{Hub, Now};
use crate::bus::Bus;
use crate::error::ErrorCode;
use crate::ids::ConnId;

impl<B: Bus> Hub<B> {
    pub(super) fn prune_ips(&mut self, now: Now) {
        self.ip_joins.retain(|_, b| !b.is_full(now.mono));
        self.ip_prune_scheduled = !self.ip_joins.is_empty();
        if self.ip_prune_scheduled {
            self.timers
                .insert((now.mono + Duration::from_secs(60), Timer::IpPrune));
        }
    }

    pub(super) fn take_join_token(&mut self, ip: IpAddr, now: Now) -> bool {
        if !self.ip_joins.contains_key(&ip) && self.ip_joins.len() >= self.config.max_tracked_ips {
            self.ip_joins.retain(|_, b| !b.is_full(now.mono));
            if self.ip_joins.len() >= self.config.max_tracked_ips {
                return false;
            }
        }
        let config = &self.config;
        let bucket = self
            .ip_joins
            .entry(ip)
            .or_insert_with(|| config.join_bucket(now.mono));
        let ok = bucket.try_take(1, now.mono);
        if !self.ip_prune_scheduled {
            self.ip_prune_scheduled = true;
            self.timers
                .insert((now.mono + Duration::from_secs(60), Timer::IpPrune));
        }
        ok
    }

    pub(super) fn rate_limited(&mut self, conn: ConnId, fatal: bool, now: Now) {
        if fatal {
            let m = "message rate limit exceeded persistently".to_string();
            return self.fail(conn, ErrorCode::RateLimited, m, now);
        }
        self.reply_error(
            ReplyTo::Conn(conn),
            ErrorCode::RateLimited,
            "too many messages per second; message dropped",
            None,
        );
    }
}
