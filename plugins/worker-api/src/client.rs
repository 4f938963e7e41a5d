//! Running a job: finds `aurora-worker`, starts it, relays its events. (Being written.)
