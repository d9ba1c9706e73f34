//! The aggregate service's stream receivers: TCP connections of
//! newline-separated lines, and Unix stream connections of length-prefixed
//! DogStatsD frames, each admitted within the shard's share of the
//! descriptor budget and drained at shutdown like the datagram receivers.

use super::*;

pub(super) async fn accept_tcp(
    id: ServiceId,
    fd: OwnedFd,
    max_line: usize,
    records: bool,
    max_conns: usize,
) -> io::Result<()> {
    let _guard = ReceiverGuard::enter(id).ok_or_else(not_running)?;
    let listener = TcpListener::from_fd(fd)?;
    let group = BufRing::new(256, 16384)?;
    let open = crate::services::accept::Drain::default();
    crate::services::accept::accept_until_stopped(listener, |conn| {
        let Some(counted) = admit_stream(id, &open, max_conns, &conn) else { return };
        let task = tcp_conn(id, conn, group.clone(), max_line, records);
        shard::spawn_local_named("statsd-tcp", async move {
            task.await;
            drop(counted);
        })
        .detach();
    })
    .await;
    Ok(())
}

fn feed_piece(shard: &Shard, p: Piece<'_>, source: Option<std::net::IpAddr>) {
    with_shard(shard, |st| match p {
        _ if st.sealed => {}
        Piece::Lines(lines) => st.agg.ingest_from(lines, source),
        Piece::TooLong => {
            let stats = st.agg.stats_mut();
            stats.lines += 1;
            stats.dropped[DropReason::TooLong.index()] += 1;
        }
    });
}

async fn tcp_conn(id: ServiceId, conn: TcpStream, group: BufRing, max_line: usize, records: bool) {
    let Some(guard) = ReceiverGuard::enter(id) else { return };
    let shard = &guard.0;
    // Only the per-origin limits by source read it: a getpeername per
    // connection otherwise.
    let by_source = with_shard(shard, |st| st.cfg.origins.as_ref().is_some_and(|o| o.by == OriginBy::Source));
    let source = if by_source { conn.peer_addr().ok().map(|a| a.ip()) } else { None };
    let mut lines = StreamLines::new(max_line);
    let mut rx = conn.recv_stream(&group);
    let mut drain_until = None;
    while let Some(next) = next_chunk(id, &mut rx, &mut drain_until).await {
        match next {
            Ok(Some(buf)) => {
                lines.feed(&buf, |p| feed_piece(shard, p, source));
                if records {
                    ship_records(id, RECORD_BATCH);
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("statsd tcp receive: {e}");
                break;
            }
        }
    }
    lines.finish(|p| feed_piece(shard, p, source));
}

/// Accepts DogStatsD stream clients on the Unix stream socket (every
/// member shard accepts on it), as TCP clients are, within the shard's
/// share of the descriptor budget.
pub(super) async fn accept_unix_stream(
    id: ServiceId,
    fd: OwnedFd,
    cfg: Arc<AggregateConfig>,
    max_conns: usize,
) -> io::Result<()> {
    let _guard = ReceiverGuard::enter(id).ok_or_else(not_running)?;
    let group = BufRing::new(256, 16384)?;
    let open = crate::services::accept::Drain::default();
    let mut stopping = false;
    loop {
        // Every member shard waits on the same listener: whoever accepts
        // first takes the connection, the others find none (WouldBlock).
        loop {
            let conn = match netstack::unix::accept(std::os::fd::AsFd::as_fd(&fd)) {
                Ok(conn) => TcpStream::from_fd(conn),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    ops::warn_limited!("statsd unix stream accept: {e}; backing off");
                    shard::time::sleep(Duration::from_millis(10)).await;
                    break;
                }
            };
            let Some(counted) = admit_stream(id, &open, max_conns, &conn) else { continue };
            let task = unix_stream_conn(id, conn, group.clone(), cfg.clone());
            shard::spawn_local_named("statsd-unix-stream", async move {
                task.await;
                drop(counted);
            })
            .detach();
        }
        if stopping {
            // Every member shard took what was queued: close the copies, so
            // a client connecting now is refused, not queued unread.
            if let Some(listener) = &cfg.unix_stream {
                listener.close();
            }
            return Ok(());
        }
        let ready = netstack::unix::readable(&fd);
        if let Either::Left(()) = select(shard::stopping(), std::pin::pin!(ready)).await {
            // Take what clients already connected, then stop accepting.
            stopping = true;
        }
    }
}

/// Admits a stream client (TCP or Unix) within the shard's share of the
/// descriptor budget, counted; one over it is reset at once and counted.
fn admit_stream(
    id: ServiceId,
    open: &crate::services::accept::Drain,
    max_conns: usize,
    conn: &TcpStream,
) -> Option<crate::services::accept::DrainGuard> {
    if open.open() >= max_conns {
        with(id, |st| st.agg.stats_mut().tcp_refused += 1);
        let _ = conn.set_reset_on_close();
        return None;
    }
    with(id, |st| st.agg.stats_mut().tcp_connections += 1);
    Some(open.enter())
}

/// One stream client: length-prefixed frames, each handled as a datagram
/// (tagged with the client's pid and container id with origin
/// detection). A frame longer than max_datagram closes the connection
/// (the stream cannot be resynchronised), counted as truncated.
async fn unix_stream_conn(id: ServiceId, conn: TcpStream, group: BufRing, cfg: Arc<AggregateConfig>) {
    let Some(guard) = ReceiverGuard::enter(id) else { return };
    let shard = &guard.0;
    let tags = cfg
        .origin_detection
        .then(|| netstack::unix::peer_creds(std::os::fd::AsFd::as_fd(&conn)).ok())
        .flatten()
        .map(|c| super::super::unix::Origins::default().tags(c.pid).to_string());
    let mut frames = cores::statsd::frames::Frames::new(cfg.max_datagram);
    let mut scratch = Vec::new();
    let mut rx = conn.recv_stream(&group);
    let mut drain_until = None;
    while let Some(next) = next_chunk(id, &mut rx, &mut drain_until).await {
        let buf = match next {
            Ok(Some(buf)) => buf,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("statsd unix stream receive: {e}");
                break;
            }
        };
        let fed = frames.feed(&buf, |payload| {
            on_payload(shard, payload, false, None, tags.as_deref().map(|t| (t, &mut scratch)));
        });
        if let Err(cores::statsd::frames::TooLong(len)) = fed {
            with_shard(shard, |st| st.agg.stats_mut().truncated += 1);
            ops::warn_limited!(
                "a statsd stream frame of {len} bytes is over max_datagram: connection closed"
            );
            let _ = conn.set_reset_on_close();
            break;
        }
        if cfg.exchange == Exchange::Records {
            ship_records(id, RECORD_BATCH);
        }
    }
}

/// The next chunk a stream client sent, or `None` when the connection is
/// to end: after a stop, what the client sends until it closes or goes
/// quiet, for the receiving part of the grace at most. Then the connection
/// is closed unread (a client still sending sees a reset): nothing read
/// after the final flush could be flushed.
async fn next_chunk(
    id: ServiceId,
    rx: &mut netstack::tcp::RecvStream<'_>,
    drain_until: &mut Option<Instant>,
) -> Option<io::Result<Option<shard::reactor::ProvidedBuf>>> {
    loop {
        if let Some(end) = *drain_until {
            let wait = drain_wait(id, end, Duration::from_millis(100))?;
            return shard::time::timeout(wait, rx.next()).await.ok();
        }
        match select(shard::stopping(), rx.next()).await {
            Either::Left(()) => *drain_until = Some(receive_deadline()),
            Either::Right(r) => return Some(r),
        }
    }
}
