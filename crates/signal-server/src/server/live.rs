//! Settings a configuration reload replaces while the server runs ([`crate::reload`]): each is
//! read per request through a [`Swap`], so a handler sees either the old value or the new one,
//! never a mix; the semaphores that bound connections and parked long-polls are resized in
//! place.

use std::sync::{Arc, Mutex, PoisonError, RwLock};

use axum::http::HeaderMap;
use floe_signal::auth::{Auth, Denied, IceRequest, TurnIdentity};
use tokio::sync::Semaphore;

use crate::origin::{OriginPolicy, Verdict};

/// A value replaced as a whole by a reload.
pub(crate) struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub(crate) fn new(value: T) -> Self {
        Self(RwLock::new(Arc::new(value)))
    }

    /// The value in force.
    pub(crate) fn get(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `value` in force for every later [`Swap::get`].
    pub(crate) fn set(&self, value: T) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(value);
    }
}

/// The handlers call the policy in force as they called the policy itself.
impl Swap<OriginPolicy> {
    pub(crate) fn check(&self, headers: &HeaderMap) -> Verdict {
        self.get().check(headers)
    }

    pub(crate) fn refusal(&self) -> &'static str {
        self.get().refusal()
    }
}

/// The handlers call the authorisation in force as they called it directly.
impl Swap<Auth> {
    pub(crate) fn is_production(&self) -> bool {
        self.get().is_production()
    }

    pub(crate) fn authorize_ice_servers(
        &self,
        token: Option<&str>,
        ip: std::net::IpAddr,
        now_unix: u64,
        asked: &IceRequest,
    ) -> Result<TurnIdentity, Denied> {
        self.get().authorize_ice_servers(token, ip, now_unix, asked)
    }
}

/// A semaphore whose number of permits a reload changes. Shrinking takes the permits that are
/// free at once and the rest as their holders give them back (a live connection is never cut
/// for it); growing first cancels what a shrink still owes.
pub(crate) struct Resizable {
    pub(crate) semaphore: Arc<Semaphore>,
    state: Mutex<Size>,
}

struct Size {
    /// The configured number of permits.
    size: usize,
    /// Permits still to take away (held by live connections when the size was lowered).
    owed: usize,
}

impl Resizable {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(size)),
            state: Mutex::new(Size { size, owed: 0 }),
        }
    }

    /// The configured number of permits.
    pub(crate) fn size(&self) -> usize {
        self.lock().size
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Size> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the number of permits to `size` (call inside the runtime).
    pub(crate) fn resize(self: &Arc<Self>, size: usize) {
        let mut st = self.lock();
        if size >= st.size {
            let mut more = size - st.size;
            let cancel = more.min(st.owed);
            st.owed -= cancel;
            more -= cancel;
            self.semaphore.add_permits(more);
        } else {
            let less = st.size - size;
            let taken = self.semaphore.forget_permits(less);
            st.owed += less - taken;
            if st.owed > 0 {
                tokio::spawn(self.clone().collect_owed());
            }
        }
        st.size = size;
    }

    /// Takes back, one at a time as they are released, the permits a shrink still owes.
    async fn collect_owed(self: Arc<Self>) {
        loop {
            if self.lock().owed == 0 {
                return;
            }
            let Ok(permit) = self.semaphore.acquire().await else {
                return;
            };
            let mut st = self.lock();
            if st.owed == 0 {
                // A later resize cancelled the debt: the permit goes back.
                return;
            }
            permit.forget();
            st.owed -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shrink_below_what_is_held_takes_the_rest_back_as_holders_release() {
        let r = Arc::new(Resizable::new(4));
        let held: Vec<_> = (0..3)
            .map(|_| r.semaphore.clone().try_acquire_owned().unwrap())
            .collect();
        // 4 -> 1 with 3 held: the free one goes at once, two are owed; nothing new fits.
        r.resize(1);
        assert_eq!(r.semaphore.available_permits(), 0);
        drop(held);
        // The collector takes the two owed back; one permit is left, as configured.
        for _ in 0..100 {
            if r.semaphore.available_permits() == 1 && r.lock().owed == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(r.semaphore.available_permits(), 1);
        // Growing adds permits; growing while owing cancels the debt first.
        r.resize(3);
        assert_eq!(r.semaphore.available_permits(), 3);
        let held: Vec<_> = (0..3)
            .map(|_| r.semaphore.clone().try_acquire_owned().unwrap())
            .collect();
        r.resize(1);
        r.resize(2);
        assert_eq!(r.lock().owed, 1);
        drop(held);
        for _ in 0..100 {
            if r.lock().owed == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(r.semaphore.available_permits(), 2);
        assert_eq!(r.size(), 2);
    }
}
