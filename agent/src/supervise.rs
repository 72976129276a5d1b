//! Supervision of the agent's stages: each registered stage is watched for death (its task
//! ended while the agent runs) and for stalls (work queued for it, no progress for a while).
//! `/healthz` reports what is wrong, naming the stage; a dead stage also ends the process with
//! an error, so that kubelet restarts the agent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// A number read from a stage: how much work waits for it, or how much it has done.
pub type Gauge = Box<dyn Fn() -> u64 + Send + Sync>;

/// A stage's progress counter: the stage adds one per unit of work it finishes.
#[derive(Clone, Debug, Default)]
pub struct Progress(Arc<AtomicU64>);

impl Progress {
    pub fn advance(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The counter, as the supervisor reads it.
    pub fn gauge(&self) -> Gauge {
        let counter = Arc::clone(&self.0);
        Box::new(move || counter.load(Ordering::Relaxed))
    }
}

/// What is watched of one stage.
pub struct StageWatch {
    pub name: &'static str,
    /// The stage's task, when it runs as one: its end, while the agent runs, is a death.
    pub task: Option<AbortHandle>,
    /// Work done and work waiting: waiting work without progress for a while is a stall.
    pub progress: Option<(Gauge, Gauge)>,
}

struct Watched {
    watch: StageWatch,
    last_progress: u64,
    since: Instant,
}

/// Everything the supervisor found wrong at its last look.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problems {
    /// Stages whose task ended.
    pub dead: Vec<&'static str>,
    /// Stages with work queued and no progress for at least the stall time, and for how long.
    pub stalled: Vec<(&'static str, Duration)>,
}

impl Problems {
    pub fn is_healthy(&self) -> bool {
        self.dead.is_empty() && self.stalled.is_empty()
    }

    /// One line per problem, e.g. `correlator: stalled for 62 s with work queued`.
    pub fn describe(&self) -> Vec<String> {
        let dead = self.dead.iter().map(|name| format!("{name}: stopped"));
        let stalled = self.stalled.iter().map(|(name, for_)| {
            format!(
                "{name}: no progress for {} s with work queued",
                for_.as_secs()
            )
        });
        dead.chain(stalled).collect()
    }
}

/// Watches the stages; shared by the daemon (which registers them) and `/healthz`.
pub struct Supervisor {
    stall_after: Duration,
    stages: Mutex<Vec<Watched>>,
    problems: watch::Sender<Problems>,
}

impl Supervisor {
    pub fn new(stall_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            stall_after,
            stages: Mutex::new(Vec::new()),
            problems: watch::Sender::new(Problems::default()),
        })
    }

    pub fn watch(&self, watch: StageWatch) {
        let watched = Watched {
            last_progress: watch.progress.as_ref().map_or(0, |(done, _)| done()),
            since: Instant::now(),
            watch,
        };
        if let Ok(mut stages) = self.stages.lock() {
            stages.push(watched);
        }
    }

    /// Looks at every stage now and publishes what is wrong.
    pub fn check(&self, now: Instant) -> Problems {
        let mut problems = Problems::default();
        let Ok(mut stages) = self.stages.lock() else {
            return problems;
        };
        for stage in stages.iter_mut() {
            if stage
                .watch
                .task
                .as_ref()
                .is_some_and(AbortHandle::is_finished)
            {
                problems.dead.push(stage.watch.name);
                continue;
            }
            let Some((progress, backlog)) = &stage.watch.progress else {
                continue;
            };
            let done = progress();
            if done != stage.last_progress || backlog() == 0 {
                stage.last_progress = done;
                stage.since = now;
                continue;
            }
            let waiting = now.saturating_duration_since(stage.since);
            if waiting >= self.stall_after {
                problems.stalled.push((stage.watch.name, waiting));
            }
        }
        drop(stages);
        self.problems.send_replace(problems.clone());
        problems
    }

    /// What was wrong at the last look.
    pub fn problems(&self) -> Problems {
        self.problems.borrow().clone()
    }

    /// Looks every `interval` until a stage dies, and returns the names of the dead stages.
    pub async fn until_a_stage_dies(&self, interval: Duration) -> Vec<&'static str> {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            let problems = self.check(Instant::now());
            for line in problems.describe() {
                tracing::error!(problem = %line, "unhealthy stage");
            }
            if !problems.dead.is_empty() {
                return problems.dead;
            }
        }
    }
}

/// Faults a test can inject into a stage (`--test-fault <kind>:<stage>`), compiled only with
/// the `test-faults` feature.
#[cfg(feature = "test-faults")]
pub mod faults {
    /// What to do to the stage.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fault {
        /// The stage stops at its next unit of work.
        Kill,
        /// The stage stops making progress at its next unit of work.
        Stall,
    }

    /// `kill:correlator` → (Kill, "correlator").
    pub fn parse(spec: &str) -> Result<(Fault, String), String> {
        let (kind, stage) = spec
            .split_once(':')
            .ok_or_else(|| format!("expected <kill|stall>:<stage>, got {spec:?}"))?;
        let fault = match kind {
            "kill" => Fault::Kill,
            "stall" => Fault::Stall,
            other => return Err(format!("unknown fault {other:?}")),
        };
        Ok((fault, stage.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog_of(value: Arc<AtomicU64>) -> Gauge {
        Box::new(move || value.load(Ordering::Relaxed))
    }

    #[test]
    fn a_stage_with_work_queued_and_no_progress_is_stalled_after_the_stall_time() {
        let supervisor = Supervisor::new(Duration::from_secs(10));
        let progress = Progress::default();
        let queued = Arc::new(AtomicU64::new(0));
        supervisor.watch(StageWatch {
            name: "correlator",
            task: None,
            progress: Some((progress.gauge(), backlog_of(queued.clone()))),
        });
        let start = Instant::now();
        assert!(supervisor.check(start).is_healthy());
        // Idle for long: nothing queued, so not stalled.
        assert!(
            supervisor
                .check(start + Duration::from_secs(60))
                .is_healthy()
        );
        queued.store(5, Ordering::Relaxed);
        assert!(
            supervisor
                .check(start + Duration::from_secs(65))
                .is_healthy()
        );
        let stalled = supervisor.check(start + Duration::from_secs(75));
        assert_eq!(stalled.stalled, [("correlator", Duration::from_secs(15))]);
        assert_eq!(
            stalled.describe(),
            ["correlator: no progress for 15 s with work queued"]
        );
        assert_eq!(supervisor.problems(), stalled);
        // Progress clears it.
        progress.advance();
        assert!(
            supervisor
                .check(start + Duration::from_secs(80))
                .is_healthy()
        );
    }

    #[tokio::test]
    async fn a_stage_whose_task_ended_is_dead_and_ends_the_wait() {
        let supervisor = Supervisor::new(Duration::from_secs(10));
        let finished = tokio::spawn(async {});
        let running = tokio::spawn(std::future::pending::<()>());
        supervisor.watch(StageWatch {
            name: "reader",
            task: Some(finished.abort_handle()),
            progress: None,
        });
        supervisor.watch(StageWatch {
            name: "writer",
            task: Some(running.abort_handle()),
            progress: None,
        });
        finished.await.expect("finished task");
        let dead = supervisor
            .until_a_stage_dies(Duration::from_millis(10))
            .await;
        assert_eq!(dead, ["reader"]);
        assert_eq!(supervisor.problems().describe(), ["reader: stopped"]);
        running.abort();
    }

    #[cfg(feature = "test-faults")]
    #[test]
    fn faults_parse_from_kind_and_stage() {
        use faults::{Fault, parse};
        assert_eq!(
            parse("kill:correlator"),
            Ok((Fault::Kill, "correlator".to_owned()))
        );
        assert_eq!(
            parse("stall:reader"),
            Ok((Fault::Stall, "reader".to_owned()))
        );
        assert!(parse("explode:reader").is_err());
        assert!(parse("reader").is_err());
    }
}
