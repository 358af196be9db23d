//! The one place that talks to epoll.
//!
//! Every socket is registered edge-triggered for reading, writing and peer
//! hang-up, once: whoever handles an event must read and write until
//! `WouldBlock`, or no further edge will come (mio's "draining readiness").

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

pub struct Poller {
    epoll: Epoll,
    events: Vec<EpollEvent>,
}

impl Poller {
    pub fn new(batch: usize) -> io::Result<Poller> {
        Ok(Poller {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            events: vec![EpollEvent::empty(); batch],
        })
    }

    /// Watches `fd` for reading, writing and hang-up, edge-triggered.
    pub fn add(&self, fd: impl AsFd, key: u64) -> io::Result<()> {
        let flags = EpollFlags::EPOLLIN
            | EpollFlags::EPOLLOUT
            | EpollFlags::EPOLLRDHUP
            | EpollFlags::EPOLLET;
        Ok(self.epoll.add(fd, EpollEvent::new(flags, key))?)
    }

    /// Watches `fd` for reading only, level-triggered: for listeners and
    /// the signalfd, whose handlers take one batch at a time.
    pub fn add_readable(&self, fd: impl AsFd, key: u64) -> io::Result<()> {
        Ok(self
            .epoll
            .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, key))?)
    }

    /// Stops or resumes reporting a descriptor added with [`add_readable`].
    ///
    /// [`add_readable`]: Poller::add_readable
    pub fn set_readable(&self, fd: impl AsFd, key: u64, readable: bool) -> io::Result<()> {
        let flags = if readable {
            EpollFlags::EPOLLIN
        } else {
            EpollFlags::empty()
        };
        Ok(self.epoll.modify(fd, &mut EpollEvent::new(flags, key))?)
    }

    /// Waits at most `timeout` and returns the keys that are ready. An
    /// interrupted wait returns no keys rather than an error.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<impl Iterator<Item = u64> + '_> {
        // Round up, as mio does: waking early would spin until the deadline.
        let millis = timeout.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        let timeout = EpollTimeout::try_from(millis).unwrap_or(EpollTimeout::MAX);
        let ready = match self.epoll.wait(&mut self.events, timeout) {
            Ok(ready) => ready,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(self.events[..ready].iter().map(EpollEvent::data))
    }
}
