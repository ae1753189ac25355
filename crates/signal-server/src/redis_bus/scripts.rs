//! The Lua scripts (each with `lua/prelude.lua` prepended) and loading them into Redis's cache.

use redis::aio::MultiplexedConnection;
use redis::{RedisError, Script};

use super::Driver;

pub(super) struct Scripts {
    pub(super) join: Script,
    pub(super) leave: Script,
    pub(super) send: Script,
    pub(super) kick: Script,
    pub(super) heartbeat: Script,
    pub(super) reap: Script,
    pub(super) bye: Script,
    pub(super) restore: Script,
    pub(super) purge: Script,
    pub(super) register: Script,
    pub(super) ack: Script,
    pub(super) resume: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let with_prelude =
            |body: &str| Script::new(&format!("{}\n{body}", include_str!("lua/prelude.lua")));
        Self {
            join: with_prelude(include_str!("lua/join.lua")),
            leave: with_prelude(include_str!("lua/leave.lua")),
            send: with_prelude(include_str!("lua/send.lua")),
            kick: with_prelude(include_str!("lua/kick.lua")),
            heartbeat: with_prelude(include_str!("lua/heartbeat.lua")),
            reap: with_prelude(include_str!("lua/reap.lua")),
            bye: with_prelude(include_str!("lua/bye.lua")),
            restore: with_prelude(include_str!("lua/restore.lua")),
            purge: with_prelude(include_str!("lua/purge.lua")),
            register: with_prelude(include_str!("lua/register.lua")),
            ack: with_prelude(include_str!("lua/ack.lua")),
            resume: with_prelude(include_str!("lua/resume.lua")),
        }
    }
}

impl Driver {
    /// Loads every script into Redis's cache (after connecting; EVALSHA needs them).
    pub(super) async fn load_scripts(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        let s = &self.scripts;
        for script in [
            &s.join,
            &s.leave,
            &s.send,
            &s.kick,
            &s.heartbeat,
            &s.reap,
            &s.bye,
            &s.restore,
            &s.purge,
            &s.register,
            &s.ack,
            &s.resume,
        ] {
            script.prepare_invoke().load_async(conn).await?;
        }
        Ok(())
    }
}
