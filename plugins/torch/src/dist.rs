//! torch.distributed's c10d engine (the one Megatron-LM and torchtitan use), bound through
//! `src/dist.cpp` because tch has no binding: a `TCPStore` rendezvous ([`Store`]), process groups
//! scoped by a `PrefixStore` ([`Group`]: Gloo on CPU; NCCL on NVIDIA and RCCL on ROCm when
//! compiled against a CUDA/ROCm libtorch) and the collectives a sharded trainer needs.
//!
//! Every collective is waited with the group's timeout. A failure names the collective, the
//! group and this rank; a timeout also lists the ranks that never entered that collective: each
//! rank records in the store how many collectives it has entered on each group, and on a timeout
//! the stalled rank reads the others' counts (a rank that died left a smaller one behind).

use std::ffi::{CString, c_char, c_int, c_void};
use std::fmt;
use std::rc::Rc;
use std::time::Duration;

use tch::Tensor;

const ERR_LEN: usize = 4096;
const OK: c_int = 0;
const TIMEOUT: c_int = 2;

unsafe extern "C" {
    fn aurora_dist_nccl_compiled() -> c_int;
    fn aurora_dist_waited_ns() -> i64;
    fn aurora_dist_store_tcp(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_store_free(store: *mut c_void);
    fn aurora_dist_store_set(
        store: *mut c_void,
        key: *const c_char,
        value: *const u8,
        value_len: usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_store_get(
        store: *mut c_void,
        key: *const c_char,
        timeout_ms: i64,
        value: *mut *mut u8,
        value_len: *mut usize,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_bytes_free(bytes: *mut u8);
    fn aurora_dist_store_check(
        store: *mut c_void,
        key: *const c_char,
        found: *mut c_int,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_group_gloo(
        store: *mut c_void,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        hostname: *const c_char,
        iface: *const c_char,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_group_nccl(
        store: *mut c_void,
        prefix: *const c_char,
        rank: c_int,
        size: c_int,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_group_free(group: *mut c_void);
    fn aurora_dist_all_reduce(
        group: *mut c_void,
        tensor: *mut c_void,
        op: c_int,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_reduce_scatter(
        group: *mut c_void,
        output: *mut c_void,
        input: *mut c_void,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_all_gather(
        group: *mut c_void,
        output: *mut c_void,
        input: *mut c_void,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_broadcast(
        group: *mut c_void,
        tensor: *mut c_void,
        root: c_int,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_send(
        group: *mut c_void,
        tensor: *mut c_void,
        dst: c_int,
        tag: c_int,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_recv(
        group: *mut c_void,
        tensor: *mut c_void,
        src: c_int,
        tag: c_int,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_barrier(group: *mut c_void, timeout_ms: i64, err: *mut c_char, len: usize) -> c_int;
    fn aurora_dist_send_recv(
        group: *mut c_void,
        send: *mut c_void,
        dst: c_int,
        recv: *mut c_void,
        src: c_int,
        tag: c_int,
        timeout_ms: i64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_copy_to_group(
        group: *mut c_void,
        x: *mut c_void,
        timeout_ms: i64,
        out: *mut *mut torch_sys::C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn aurora_dist_reduce_from_group(
        group: *mut c_void,
        x: *mut c_void,
        timeout_ms: i64,
        out: *mut *mut torch_sys::C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// The start of the message of a collective that failed inside the backward pass (see
/// [`Group::copy_to`]): tch turns it into a panic, which the trainer recognises by this text.
pub const BACKWARD_FAILURE: &str = "aurora-dist: collective in backward failed: ";

/// Whether this build can create NCCL (or RCCL) process groups: compiled against a CUDA or ROCm
/// libtorch with NCCL headers.
pub fn nccl_compiled() -> bool {
    // SAFETY: a constant getter.
    unsafe { aurora_dist_nccl_compiled() == 1 }
}

/// How long this process has spent blocked waiting for collectives and point-to-point transfers
/// to complete, every group and thread together, since it started: on CPU (Gloo) the time spent
/// in communication, including waiting for slower peers (a pipeline's bubble shows here). With
/// NCCL a wait only orders the CUDA stream, so the figure says little there.
pub fn time_in_communication() -> Duration {
    // SAFETY: an atomic load.
    Duration::from_nanos(unsafe { aurora_dist_waited_ns() }.max(0) as u64)
}

/// Errors of the distributed runtime.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// The rendezvous store could not be created or reached.
    #[error("rendezvous at {addr} failed (rank {rank}): {message}; {hint}")]
    Rendezvous { addr: String, rank: usize, message: String, hint: String },
    /// A store operation failed after the rendezvous.
    #[error("the rendezvous store at {addr} failed on `{key}` (rank {rank}): {message}")]
    Store { addr: String, rank: usize, key: String, message: String },
    /// A process group could not be created.
    #[error("cannot create the {backend} process group `{group}` (rank {rank}): {message}")]
    Group { backend: Backend, group: String, rank: usize, message: String },
    /// A collective failed (a peer died, a connection closed, a bad tensor...).
    #[error("{op} #{seq} on group `{group}` failed on rank {rank}: {message}")]
    Collective { op: &'static str, seq: u64, group: String, rank: usize, message: String },
    /// A collective did not complete within the timeout.
    #[error(
        "{op} #{seq} on group `{group}` timed out after {:.0?} on rank {rank}: {}",
        timeout,
        describe_missing(missing)
    )]
    Timeout { op: &'static str, seq: u64, group: String, rank: usize, timeout: Duration, missing: Missing },
    /// NCCL was asked for where it is not compiled in.
    #[error(
        "the NCCL backend was asked for, but this aurora was built against a CPU libtorch: rebuild against a CUDA \
         (or ROCm) libtorch (`cargo xtask libtorch --cuda`, or LIBTORCH), or train on device \"cpu\" (Gloo)"
    )]
    NcclUnavailable,
}

/// Which ranks had not entered a collective when another rank timed out in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    /// Global ranks whose count of collectives on the group was below the stalled one's.
    Ranks(Vec<usize>),
    /// Every rank had entered it: the collective itself is stuck (network, backend).
    None,
    /// The store could not be read (its host, rank 0, is likely gone).
    Unknown(String),
}

fn describe_missing(missing: &Missing) -> String {
    match missing {
        Missing::Ranks(ranks) => format!(
            "rank(s) {} never entered it (crashed, killed, or stuck before it: see their logs)",
            ranks.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")
        ),
        Missing::None => "every rank entered it; the transport itself is stuck (check the network between \
                          the hosts, GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME)"
            .to_owned(),
        Missing::Unknown(why) => format!("could not ask the store which ranks are missing ({why}); rank 0 hosts it"),
    }
}

/// The communication backend of a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        })
    }
}

/// A reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

fn cstring(text: &str) -> CString {
    CString::new(text.replace('\0', "")).expect("NULs removed")
}

fn err_text(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).trim().to_owned()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Calls a shim function with an error buffer: `Ok(())`, or `Err((timed_out, message))`.
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), (bool, String)> {
    let mut buf = vec![0u8; ERR_LEN];
    match f(buf.as_mut_ptr().cast(), buf.len()) {
        OK => Ok(()),
        code => Err((code == TIMEOUT, err_text(&buf))),
    }
}

/// The rendezvous: a `TCPStore` on `host:port`, served by rank 0.
pub struct Store {
    ptr: *mut c_void,
    addr: String,
    rank: usize,
}

impl Store {
    /// Connects to (rank 0: serves) the store at `host:port` for `world` ranks, waiting up to
    /// `timeout` for the server.
    pub fn connect(host: &str, port: u16, rank: usize, world: usize, timeout: Duration) -> Result<Rc<Self>, DistError> {
        let addr = format!("{host}:{port}");
        let c_host = cstring(host);
        let mut ptr = std::ptr::null_mut();
        let world_c = c_int::try_from(world).unwrap_or(c_int::MAX);
        call(|err, len| unsafe {
            // SAFETY: valid C strings and out-pointer; the shim catches every exception.
            aurora_dist_store_tcp(
                c_host.as_ptr(),
                port,
                c_int::from(rank == 0),
                world_c,
                millis(timeout),
                &mut ptr,
                err,
                len,
            )
        })
        .map_err(|(_, message)| {
            let hint = if rank == 0 && (message.contains("EADDRINUSE") || message.contains("in use")) {
                format!("port {port} is taken on {host}: set MASTER_PORT to a free port")
            } else if rank == 0 {
                format!("rank 0 must be able to listen on {addr}: check MASTER_ADDR names this host")
            } else {
                format!(
                    "rank 0 must be serving it: check that MASTER_ADDR={host} is rank 0's host and reachable from \
                     here, that MASTER_PORT={port} is open, and that rank 0 started (its log says why not)"
                )
            };
            DistError::Rendezvous { addr: addr.clone(), rank, message, hint }
        })?;
        Ok(Rc::new(Store { ptr, addr, rank }))
    }

    /// `host:port` of the store.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn store_error(&self, key: &str, message: String) -> DistError {
        DistError::Store { addr: self.addr.clone(), rank: self.rank, key: key.to_owned(), message }
    }

    /// Sets `key` to `value`.
    pub fn set(&self, key: &str, value: &[u8]) -> Result<(), DistError> {
        let c_key = cstring(key);
        call(|err, len| unsafe {
            // SAFETY: valid pointers for the call's duration.
            aurora_dist_store_set(self.ptr, c_key.as_ptr(), value.as_ptr(), value.len(), err, len)
        })
        .map_err(|(_, m)| self.store_error(key, m))
    }

    /// Waits up to `timeout` for `key` and returns its value.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>, DistError> {
        let c_key = cstring(key);
        let (mut value, mut value_len) = (std::ptr::null_mut(), 0usize);
        call(|err, len| unsafe {
            // SAFETY: valid pointers; the shim mallocs `value`, freed below.
            aurora_dist_store_get(self.ptr, c_key.as_ptr(), millis(timeout), &mut value, &mut value_len, err, len)
        })
        .map_err(|(_, m)| self.store_error(key, m))?;
        // SAFETY: the shim returned a buffer of `value_len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(value, value_len) }.to_vec();
        // SAFETY: allocated by the shim with malloc.
        unsafe { aurora_dist_bytes_free(value) };
        Ok(bytes)
    }

    /// Whether `key` is set, without waiting.
    pub fn check(&self, key: &str) -> Result<bool, DistError> {
        let c_key = cstring(key);
        let mut found = 0;
        call(|err, len| unsafe {
            // SAFETY: valid pointers.
            aurora_dist_store_check(self.ptr, c_key.as_ptr(), &mut found, err, len)
        })
        .map_err(|(_, m)| self.store_error(key, m))?;
        Ok(found == 1)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: created by aurora_dist_store_tcp, freed once.
        unsafe { aurora_dist_store_free(self.ptr) }
    }
}

/// Where a Gloo group binds: an interface (`GLOO_SOCKET_IFNAME`), a host address, or this
/// machine's resolved hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlooDevice {
    Interface(String),
    Host(String),
    Default,
}

/// A process group: `ranks` (global ranks, in group-rank order) talking over one backend.
pub struct Group {
    ptr: *mut c_void,
    name: String,
    backend: Backend,
    /// Global ranks of the members, in group-rank order.
    ranks: Vec<usize>,
    /// This process's global rank.
    rank: usize,
    timeout: Duration,
    store: Rc<Store>,
    seq: std::cell::Cell<u64>,
}

impl Group {
    /// Creates the group `name` of `ranks` (global ranks; this process must be one of them) on
    /// `backend`. Every member must call this with the same name and ranks.
    pub fn new(
        store: &Rc<Store>,
        name: &str,
        backend: Backend,
        ranks: Vec<usize>,
        rank: usize,
        device: &GlooDevice,
        timeout: Duration,
    ) -> Result<Self, DistError> {
        let index = ranks.iter().position(|&r| r == rank).expect("this rank is a member of the group");
        let size = c_int::try_from(ranks.len()).unwrap_or(c_int::MAX);
        let prefix = cstring(&format!("group/{name}/"));
        let mut ptr = std::ptr::null_mut();
        let index = index as c_int;
        let result = match backend {
            Backend::Gloo => {
                let (host, iface) = match device {
                    GlooDevice::Interface(i) => (String::new(), i.clone()),
                    GlooDevice::Host(h) => (h.clone(), String::new()),
                    GlooDevice::Default => (String::new(), String::new()),
                };
                let (c_host, c_iface) = (cstring(&host), cstring(&iface));
                call(|err, len| unsafe {
                    // SAFETY: valid pointers; the store outlives the group (held by Rc).
                    aurora_dist_group_gloo(
                        store.ptr,
                        prefix.as_ptr(),
                        index,
                        size,
                        c_host.as_ptr(),
                        c_iface.as_ptr(),
                        millis(timeout),
                        &mut ptr,
                        err,
                        len,
                    )
                })
            }
            Backend::Nccl => {
                if !nccl_compiled() {
                    return Err(DistError::NcclUnavailable);
                }
                call(|err, len| unsafe {
                    // SAFETY: as above.
                    aurora_dist_group_nccl(store.ptr, prefix.as_ptr(), index, size, millis(timeout), &mut ptr, err, len)
                })
            }
        };
        result.map_err(|(_, message)| DistError::Group { backend, group: name.to_owned(), rank, message })?;
        Ok(Group {
            ptr,
            name: name.to_owned(),
            backend,
            ranks,
            rank,
            timeout,
            store: Rc::clone(store),
            seq: std::cell::Cell::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Members' global ranks in group-rank order.
    pub fn ranks(&self) -> &[usize] {
        &self.ranks
    }

    pub fn size(&self) -> usize {
        self.ranks.len()
    }

    /// This process's rank within the group.
    pub fn group_rank(&self) -> usize {
        self.ranks.iter().position(|&r| r == self.rank).expect("a member")
    }

    fn seq_key(&self, rank: usize) -> String {
        format!("seq/{}/{rank}", self.name)
    }

    /// Runs one collective: records that this rank entered it, then maps failures.
    fn run(&self, op: &'static str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), DistError> {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        if self.size() > 1 {
            self.store.set(&self.seq_key(self.rank), seq.to_string().as_bytes())?;
        }
        call(f).map_err(|(timed_out, message)| {
            let group = self.name.clone();
            if timed_out {
                DistError::Timeout {
                    op,
                    seq,
                    group,
                    rank: self.rank,
                    timeout: self.timeout,
                    missing: self.missing(seq),
                }
            } else {
                DistError::Collective { op, seq, group, rank: self.rank, message }
            }
        })
    }

    /// The members that had not entered collective `seq` (see the module docs).
    fn missing(&self, seq: u64) -> Missing {
        let mut behind = Vec::new();
        for &r in &self.ranks {
            let key = self.seq_key(r);
            let entered = match self.store.check(&key) {
                Ok(false) => 0,
                Ok(true) => match self.store.get(&key, Duration::from_secs(5)) {
                    Ok(v) => String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0),
                    Err(e) => return Missing::Unknown(e.to_string()),
                },
                Err(e) => return Missing::Unknown(e.to_string()),
            };
            if entered < seq {
                behind.push(r);
            }
        }
        if behind.is_empty() { Missing::None } else { Missing::Ranks(behind) }
    }

    fn timeout_ms(&self) -> i64 {
        millis(self.timeout)
    }

    /// Reduces `tensor` in place over the group.
    pub fn all_reduce(&self, tensor: &mut Tensor, op: ReduceOp) -> Result<(), DistError> {
        let op_c = match op {
            ReduceOp::Sum => 0,
            ReduceOp::Max => 1,
            ReduceOp::Min => 2,
        };
        let t = tensor.as_mut_ptr().cast();
        self.run("all_reduce", |err, len| unsafe {
            // SAFETY: `t` is a live tch tensor (torch::Tensor*) for the call's duration.
            aurora_dist_all_reduce(self.ptr, t, op_c, self.timeout_ms(), err, len)
        })
    }

    /// `output` (numel n) becomes the sum over members of their slice `group_rank` of `input`
    /// (numel n * size). Both contiguous, same dtype.
    pub fn reduce_scatter(&self, output: &mut Tensor, input: &mut Tensor) -> Result<(), DistError> {
        let (o, i) = (output.as_mut_ptr().cast(), input.as_mut_ptr().cast());
        self.run("reduce_scatter", |err, len| unsafe {
            // SAFETY: as above.
            aurora_dist_reduce_scatter(self.ptr, o, i, self.timeout_ms(), err, len)
        })
    }

    /// `output` (numel n * size) becomes every member's `input` (numel n) in group-rank order.
    pub fn all_gather(&self, output: &mut Tensor, input: &mut Tensor) -> Result<(), DistError> {
        let (o, i) = (output.as_mut_ptr().cast(), input.as_mut_ptr().cast());
        self.run("all_gather", |err, len| unsafe {
            // SAFETY: as above.
            aurora_dist_all_gather(self.ptr, o, i, self.timeout_ms(), err, len)
        })
    }

    /// Copies group rank `root`'s `tensor` into every member's.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), DistError> {
        let t = tensor.as_mut_ptr().cast();
        self.run("broadcast", |err, len| unsafe {
            // SAFETY: as above.
            aurora_dist_broadcast(self.ptr, t, root as c_int, self.timeout_ms(), err, len)
        })
    }

    /// Sends `tensor` to group rank `dst` (point to point; does not count as a collective of
    /// the whole group).
    pub fn send(&self, tensor: &mut Tensor, dst: usize, tag: i32) -> Result<(), DistError> {
        let t = tensor.as_mut_ptr().cast();
        call(|err, len| unsafe {
            // SAFETY: as above.
            aurora_dist_send(self.ptr, t, dst as c_int, tag, self.timeout_ms(), err, len)
        })
        .map_err(|(_, message)| self.p2p_error("send", dst, message))
    }

    /// Receives `tensor` from group rank `src`.
    pub fn recv(&self, tensor: &mut Tensor, src: usize, tag: i32) -> Result<(), DistError> {
        let t = tensor.as_mut_ptr().cast();
        call(|err, len| unsafe {
            // SAFETY: as above.
            aurora_dist_recv(self.ptr, t, src as c_int, tag, self.timeout_ms(), err, len)
        })
        .map_err(|(_, message)| self.p2p_error("recv", src, message))
    }

    fn p2p_error(&self, op: &'static str, peer: usize, message: String) -> DistError {
        DistError::Collective {
            op,
            seq: self.seq.get(),
            group: self.name.clone(),
            rank: self.rank,
            message: format!("with group rank {peer}: {message}"),
        }
    }

    /// Sends `send` to group rank `dst` and receives `recv` from group rank `src` (either may be
    /// absent), both posted before either is waited: the pipeline's paired exchange.
    pub fn send_recv(
        &self,
        send: Option<(&mut Tensor, usize)>,
        recv: Option<(&mut Tensor, usize)>,
        tag: i32,
    ) -> Result<(), DistError> {
        let peer = send.as_ref().map(|s| s.1).or(recv.as_ref().map(|r| r.1)).unwrap_or(0);
        let (s_ptr, dst) = send.map_or((std::ptr::null_mut(), 0), |(t, d)| (t.as_mut_ptr().cast(), d));
        let (r_ptr, src) = recv.map_or((std::ptr::null_mut(), 0), |(t, s)| (t.as_mut_ptr().cast(), s));
        call(|err, len| unsafe {
            // SAFETY: live tch tensors (or null) for the call's duration.
            aurora_dist_send_recv(self.ptr, s_ptr, dst as c_int, r_ptr, src as c_int, tag, self.timeout_ms(), err, len)
        })
        .map_err(|(_, message)| self.p2p_error("send_recv", peer, message))
    }

    /// `x` unchanged, whose gradient is summed over the group in the backward pass (Megatron's
    /// `copy_to_tensor_model_parallel_region`: the input of a column-parallel linear).
    pub fn copy_to(&self, x: &Tensor) -> Result<Tensor, DistError> {
        self.mapping("copy_to", x, aurora_dist_copy_to_group)
    }

    /// `x` summed over the group, whose gradient passes through unchanged (Megatron's
    /// `reduce_from_tensor_model_parallel_region`: the output of a row-parallel linear).
    pub fn reduce_from(&self, x: &Tensor) -> Result<Tensor, DistError> {
        self.mapping("reduce_from", x, aurora_dist_reduce_from_group)
    }

    fn mapping(
        &self,
        op: &'static str,
        x: &Tensor,
        f: unsafe extern "C" fn(
            *mut c_void,
            *mut c_void,
            i64,
            *mut *mut torch_sys::C_tensor,
            *mut c_char,
            usize,
        ) -> c_int,
    ) -> Result<Tensor, DistError> {
        let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
        let input = x.as_ptr() as *mut c_void;
        call(|err, len| unsafe {
            // SAFETY: `x` is live; the shim allocates `out` (a torch::Tensor*) on success.
            f(self.ptr, input, self.timeout_ms(), &mut out, err, len)
        })
        .map_err(|(_, message)| DistError::Collective {
            op,
            seq: self.seq.get(),
            group: self.name.clone(),
            rank: self.rank,
            message,
        })?;
        // SAFETY: a fresh torch::Tensor* owned by the returned Tensor.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// Waits until every member arrives.
    pub fn barrier(&self) -> Result<(), DistError> {
        self.run("barrier", |err, len| unsafe {
            // SAFETY: plain pointer to the group.
            aurora_dist_barrier(self.ptr, self.timeout_ms(), err, len)
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: created by the shim, freed once.
        unsafe { aurora_dist_group_free(self.ptr) }
    }
}
