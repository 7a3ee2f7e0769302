//! The `jfconnect.v1.Entitlements` service: answers from the feed's latest snapshot, and
//! streams changes without a queue (a watch stream computes its next message only when the
//! connection can take it, from the latest snapshot, so a slow consumer skips intermediate
//! versions instead of making the server buffer them).

use crate::clock::SharedClock;
use crate::entitlements::feed::{check_name, Feed, FeedReceiver, Served, Source};
use crate::secret::Secret;
use futures_util::Stream;
use jfconnect_client::proto;
use jfconnect_client::proto::entitlements_server::Entitlements;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Longest `last_version` a watch accepts (versions are 32 hex digits).
const MAX_VERSION: usize = 128;

/// Answers the Entitlements calls.
pub(crate) struct EntitlementsService {
    pub(crate) feed: FeedReceiver,
    pub(crate) clock: SharedClock,
    /// Flips to true at shutdown: open watch streams end so the server can drain.
    pub(crate) stop: watch::Receiver<bool>,
}

/// Lets a call through only with `authorization: Bearer <api token>`, compared in constant
/// time.
pub(crate) fn authorize(token: Option<&Secret>, request: &Request<()>) -> Result<(), Status> {
    let presented = request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(Status::unauthenticated(
            "this call needs authorization: Bearer <token> metadata (see jfconnect.api.token_file)",
        )),
        Some(t) if token.is_some_and(|k| k.ct_eq(t.trim())) => Ok(()),
        Some(_) => Err(Status::unauthenticated("the API token is not valid")),
    }
}

fn disabled() -> Status {
    Status::unavailable("jfconnect is disabled (jfconnect.enabled: false)")
}

fn source(s: Source) -> i32 {
    match s {
        Source::Connected => proto::Source::Connected as i32,
        Source::AirGapped => proto::Source::AirGapped as i32,
    }
}

/// The reply for `s` at `now`.
pub(crate) fn reply(s: &Served, now: chrono::DateTime<chrono::Utc>) -> proto::EntitlementsReply {
    proto::EntitlementsReply {
        version: s.version.clone(),
        jpd_id: s.jpd_id.clone(),
        subscription_id: s.entitlements.subscription_id.clone(),
        subscription_type: s.entitlements.subscription_type.clone(),
        entitlements: s
            .entitlements
            .entitlements
            .iter()
            .map(|e| proto::Entitlement {
                product: e.product.clone(),
                feature: e.feature.clone(),
                valid_from: e.valid_from.clone().unwrap_or_default(),
                valid_until: e.valid_until.clone().unwrap_or_default(),
            })
            .collect(),
        fetched_at: s.fetched_at.to_rfc3339(),
        confirmed_at: s.confirmed_at.to_rfc3339(),
        age_seconds: s.age_seconds(now),
        source: source(s.source),
    }
}

impl EntitlementsService {
    fn served(&self) -> Result<Arc<Feed>, Status> {
        let feed = self.feed.borrow().clone();
        match &*feed {
            Feed::Disabled => Err(disabled()),
            Feed::Empty => Err(Status::not_found(
                "no entitlements have been received yet; GET /api/v1/jobs shows why",
            )),
            Feed::Served(_) => Ok(feed),
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<proto::EntitlementsReply, Status>> + Send>>;

#[tonic::async_trait]
impl Entitlements for EntitlementsService {
    async fn get_entitlements(
        &self,
        _request: Request<proto::GetEntitlementsRequest>,
    ) -> Result<Response<proto::EntitlementsReply>, Status> {
        let feed = self.served()?;
        let Feed::Served(s) = &*feed else {
            return Err(disabled());
        };
        Ok(Response::new(reply(s, self.clock.now())))
    }

    async fn check(
        &self,
        request: Request<proto::CheckRequest>,
    ) -> Result<Response<proto::CheckReply>, Status> {
        let r = request.into_inner();
        check_name("product", &r.product).map_err(Status::invalid_argument)?;
        check_name("feature", &r.feature).map_err(Status::invalid_argument)?;
        let feed = self.served()?;
        let Feed::Served(s) = &*feed else {
            return Err(disabled());
        };
        let now = self.clock.now();
        let answer = s.check(&r.product, &r.feature, now);
        Ok(Response::new(proto::CheckReply {
            entitled: answer.entitled,
            valid_until: answer.valid_until.unwrap_or_default(),
            source: source(s.source),
            age_seconds: s.age_seconds(now),
            version: s.version.clone(),
        }))
    }

    type WatchEntitlementsStream = WatchStream;

    async fn watch_entitlements(
        &self,
        request: Request<proto::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let last = request.into_inner().last_version;
        if last.len() > MAX_VERSION {
            return Err(Status::invalid_argument(format!(
                "last_version is longer than {MAX_VERSION} bytes"
            )));
        }
        if matches!(&**self.feed.borrow(), Feed::Disabled) {
            return Err(disabled());
        }
        let state = WatchState {
            feed: self.feed.clone(),
            stop: self.stop.clone(),
            clock: self.clock.clone(),
            last,
        };
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            state,
            WatchState::next,
        ))))
    }
}

struct WatchState {
    feed: FeedReceiver,
    stop: watch::Receiver<bool>,
    clock: SharedClock,
    last: String,
}

impl WatchState {
    /// The next message: the latest snapshot once its version differs from the last one sent;
    /// `None` (end of stream) at shutdown.
    async fn next(mut self) -> Option<(Result<proto::EntitlementsReply, Status>, WatchState)> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            let feed = self.feed.borrow_and_update().clone();
            if let Feed::Served(s) = &*feed {
                if s.version != self.last {
                    self.last = s.version.clone();
                    let message = reply(s, self.clock.now());
                    return Some((Ok(message), self));
                }
            }
            tokio::select! {
                changed = self.feed.changed() => if changed.is_err() { return None },
                _ = self.stop.changed() => {}
            }
        }
    }
}
