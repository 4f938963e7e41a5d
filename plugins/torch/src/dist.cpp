// torch.distributed's c10d engine for Rust: what tch does not bind. A TCPStore rendezvous,
// PrefixStore-scoped process groups (Gloo on CPU; NCCL on NVIDIA, and RCCL on ROCm behind the
// NCCL names, when compiled with AURORA_WITH_NCCL) and the collectives the trainer needs, each
// waited with a timeout.
//
// Every function catches every C++ exception: it returns AURORA_DIST_OK, or an error code with
// the exception's text copied into the caller's buffer. Tensors are tch's `C_tensor`
// (torch-sys's `typedef torch::Tensor *tensor`).
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/autograd/custom_function.h>
#ifdef AURORA_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

constexpr int kOk = 0;
constexpr int kError = 1;
constexpr int kTimeout = 2;

struct Group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

void fill(char* err, size_t len, const std::string& text) {
  if (err == nullptr || len == 0) return;
  size_t n = std::min(len - 1, text.size());
  std::memcpy(err, text.data(), n);
  err[n] = '\0';
}

bool mentions_timeout(const std::string& text) {
  return text.find("imed out") != std::string::npos || text.find("imeout") != std::string::npos;
}

// Runs `f`, mapping exceptions to codes (timeouts apart, so callers can say what hung).
template <typename F>
int guarded(char* err, size_t len, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    std::string text = e.what();
    // libtorch appends a C++ stack trace after the first line(s): keep the message only.
    auto cut = text.find("\nException raised from");
    if (cut != std::string::npos) text = text.substr(0, cut);
    fill(err, len, text);
    return mentions_timeout(text) ? kTimeout : kError;
  } catch (...) {
    fill(err, len, "unknown C++ exception");
    return kError;
  }
}

// Nanoseconds this process has spent blocked in `wait` (every collective and transfer goes
// through it): what a benchmark reports as time in communication. Gloo's work runs on its own
// threads, so on CPU this is the whole transfer plus waiting for slower peers; NCCL's wait only
// orders the stream, so on CUDA it says little.
std::atomic<int64_t> waited_ns{0};

int wait(const c10::intrusive_ptr<c10d::Work>& work, int64_t timeout_ms) {
  auto started = std::chrono::steady_clock::now();
  bool done = work->wait(std::chrono::milliseconds(timeout_ms));
  waited_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count();
  if (!done) {
    throw std::runtime_error("Timed out waiting for the collective to complete");
  }
  return kOk;
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0: return c10d::ReduceOp::SUM;
    case 1: return c10d::ReduceOp::MAX;
    case 2: return c10d::ReduceOp::MIN;
    default: throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

// Megatron's tensor-parallel mappings (mappings.py) as autograd functions: communication inside
// the backward pass, which tch cannot express. The group travels as a pointer in saved_data; it
// outlives the graph (the trainer keeps its groups for the whole job). A failed collective in
// backward throws; the message starts with kBackwardFailure so the trainer can tell it from a
// bug.
constexpr const char* kBackwardFailure = "aurora-dist: collective in backward failed: ";

void all_reduce_sum(Group* group, at::Tensor& t, int64_t timeout_ms) {
  std::vector<at::Tensor> tensors{t};
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  opts.timeout = std::chrono::milliseconds(timeout_ms);
  wait(group->backend->allreduce(tensors, opts), timeout_ms);
}

Group* saved_group(torch::autograd::AutogradContext* ctx) {
  return reinterpret_cast<Group*>(ctx->saved_data["group"].toInt());
}

// Identity forward; the gradient is summed over the group (the input of a column-parallel
// linear: every rank's partial input gradient adds up).
struct CopyToGroup : public torch::autograd::Function<CopyToGroup> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group,
                            int64_t timeout_ms) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["timeout"] = timeout_ms;
    return x.clone();
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    at::Tensor g = grads[0].contiguous().clone();
    try {
      all_reduce_sum(saved_group(ctx), g, ctx->saved_data["timeout"].toInt());
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string(kBackwardFailure) + e.what());
    }
    return {g, at::Tensor(), at::Tensor()};
  }
};

// Sum over the group forward (the output of a row-parallel linear, the vocab-parallel
// embedding); identity backward.
struct ReduceFromGroup : public torch::autograd::Function<ReduceFromGroup> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group,
                            int64_t timeout_ms) {
    (void)ctx;
    at::Tensor out = x.contiguous().clone();
    all_reduce_sum(reinterpret_cast<Group*>(group), out, timeout_ms);
    return out;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    (void)ctx;
    return {grads[0], at::Tensor(), at::Tensor()};
  }
};

}  // namespace

extern "C" {

int64_t aurora_dist_waited_ns(void) { return waited_ns.load(); }

int aurora_dist_nccl_compiled(void) {
#ifdef AURORA_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// A TCPStore client (or, with is_server, the server on this process too) for `world` ranks.
int aurora_dist_store_tcp(const char* host, uint16_t port, int is_server, int world, int64_t timeout_ms,
                          void** out, char* err, size_t len) {
  return guarded(err, len, [&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<size_t>(world);
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    *out = new c10::intrusive_ptr<c10d::Store>(store);
    return kOk;
  });
}

void aurora_dist_store_free(void* store) {
  delete static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
}

int aurora_dist_store_set(void* store, const char* key, const uint8_t* value, size_t value_len, char* err,
                          size_t len) {
  return guarded(err, len, [&] {
    auto& s = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
    s->set(std::string(key), std::vector<uint8_t>(value, value + value_len));
    return kOk;
  });
}

// Waits up to timeout_ms for `key`, then returns its value in a malloc'd buffer (free it with
// aurora_dist_bytes_free).
int aurora_dist_store_get(void* store, const char* key, int64_t timeout_ms, uint8_t** value, size_t* value_len,
                          char* err, size_t len) {
  return guarded(err, len, [&] {
    auto& s = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
    s->wait({std::string(key)}, std::chrono::milliseconds(timeout_ms));
    auto bytes = s->get(std::string(key));
    *value_len = bytes.size();
    *value = static_cast<uint8_t*>(std::malloc(bytes.empty() ? 1 : bytes.size()));
    if (!bytes.empty()) std::memcpy(*value, bytes.data(), bytes.size());
    return kOk;
  });
}

void aurora_dist_bytes_free(uint8_t* bytes) { std::free(bytes); }

// Whether `key` is set (no waiting): 1 yes, 0 no; errors as usual.
int aurora_dist_store_check(void* store, const char* key, int* found, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto& s = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
    *found = s->check({std::string(key)}) ? 1 : 0;
    return kOk;
  });
}

// A Gloo process group of `size` ranks over the store's keys under `prefix`. `hostname`: the
// address to bind ("" = resolve this machine's hostname, falling back to loopback); `iface`: a
// network interface name, which takes precedence (GLOO_SOCKET_IFNAME).
int aurora_dist_group_gloo(void* store, const char* prefix, int rank, int size, const char* hostname,
                           const char* iface, int64_t timeout_ms, void** out, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto& s = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
    auto scoped = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), s);
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    if (iface != nullptr && iface[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(std::string(iface)));
    } else if (hostname != nullptr && hostname[0] != '\0') {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(std::string(hostname)));
    } else {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    // One thread: collectives are issued and waited one at a time, in program order.
    opts->threads = 1;
    auto backend = c10::make_intrusive<c10d::ProcessGroupGloo>(scoped, rank, size, opts);
    *out = new Group{backend};
    return kOk;
  });
}

// An NCCL (RCCL on ROCm) process group; the current CUDA device must already be set.
int aurora_dist_group_nccl(void* store, const char* prefix, int rank, int size, int64_t timeout_ms, void** out,
                           char* err, size_t len) {
#ifdef AURORA_WITH_NCCL
  return guarded(err, len, [&] {
    auto& s = *static_cast<c10::intrusive_ptr<c10d::Store>*>(store);
    auto scoped = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), s);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(scoped, rank, size, opts);
    *out = new Group{backend};
    return kOk;
  });
#else
  (void)store; (void)prefix; (void)rank; (void)size; (void)timeout_ms; (void)out;
  fill(err, len, "this aurora was built against a libtorch without NCCL (a CPU build)");
  return kError;
#endif
}

void aurora_dist_group_free(void* group) { delete static_cast<Group*>(group); }

int aurora_dist_all_reduce(void* group, torch::Tensor* tensor, int op, int64_t timeout_ms, char* err, size_t len) {
  return guarded(err, len, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    return wait(static_cast<Group*>(group)->backend->allreduce(tensors, opts), timeout_ms);
  });
}

// output (numel n) = the sum over ranks of this rank's slice of input (numel n * size).
int aurora_dist_reduce_scatter(void* group, torch::Tensor* output, torch::Tensor* input, int64_t timeout_ms,
                               char* err, size_t len) {
  return guarded(err, len, [&] {
    c10d::ReduceScatterOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    return wait(static_cast<Group*>(group)->backend->_reduce_scatter_base(*output, *input, opts), timeout_ms);
  });
}

// output (numel n * size) = every rank's input (numel n), in rank order.
int aurora_dist_all_gather(void* group, torch::Tensor* output, torch::Tensor* input, int64_t timeout_ms, char* err,
                           size_t len) {
  return guarded(err, len, [&] {
    c10d::AllgatherOptions opts;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    return wait(static_cast<Group*>(group)->backend->_allgather_base(*output, *input, opts), timeout_ms);
  });
}

int aurora_dist_broadcast(void* group, torch::Tensor* tensor, int root, int64_t timeout_ms, char* err, size_t len) {
  return guarded(err, len, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    return wait(static_cast<Group*>(group)->backend->broadcast(tensors, opts), timeout_ms);
  });
}

int aurora_dist_send(void* group, torch::Tensor* tensor, int dst, int tag, int64_t timeout_ms, char* err,
                     size_t len) {
  return guarded(err, len, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    return wait(static_cast<Group*>(group)->backend->send(tensors, dst, tag), timeout_ms);
  });
}

int aurora_dist_recv(void* group, torch::Tensor* tensor, int src, int tag, int64_t timeout_ms, char* err,
                     size_t len) {
  return guarded(err, len, [&] {
    std::vector<at::Tensor> tensors{*tensor};
    return wait(static_cast<Group*>(group)->backend->recv(tensors, src, tag), timeout_ms);
  });
}

// Posts a send to `dst` and a receive from `src` (either may be null) before waiting for
// both, as Megatron's batched p2p does: two pipeline stages exchanging activations and
// gradients at the same time would deadlock with blocking sends.
int aurora_dist_send_recv(void* group, torch::Tensor* send, int dst, torch::Tensor* recv, int src, int tag,
                          int64_t timeout_ms, char* err, size_t len) {
  return guarded(err, len, [&] {
    auto& backend = static_cast<Group*>(group)->backend;
    std::vector<at::Tensor> out, in;
    c10::intrusive_ptr<c10d::Work> sent, received;
    if (recv != nullptr) {
      in.push_back(*recv);
      received = backend->recv(in, src, tag);
    }
    if (send != nullptr) {
      out.push_back(*send);
      sent = backend->send(out, dst, tag);
    }
    if (sent) wait(sent, timeout_ms);
    if (received) wait(received, timeout_ms);
    return kOk;
  });
}

// `*out` = CopyToGroup / ReduceFromGroup applied to `x` (see above).
int aurora_dist_copy_to_group(void* group, torch::Tensor* x, int64_t timeout_ms, torch::Tensor** out, char* err,
                              size_t len) {
  return guarded(err, len, [&] {
    *out = new torch::Tensor(CopyToGroup::apply(*x, reinterpret_cast<int64_t>(group), timeout_ms));
    return kOk;
  });
}

int aurora_dist_reduce_from_group(void* group, torch::Tensor* x, int64_t timeout_ms, torch::Tensor** out,
                                  char* err, size_t len) {
  return guarded(err, len, [&] {
    *out = new torch::Tensor(ReduceFromGroup::apply(*x, reinterpret_cast<int64_t>(group), timeout_ms));
    return kOk;
  });
}

int aurora_dist_barrier(void* group, int64_t timeout_ms, char* err, size_t len) {
  return guarded(err, len, [&] {
    c10d::BarrierOptions opts;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    return wait(static_cast<Group*>(group)->backend->barrier(opts), timeout_ms);
  });
}

}  // extern "C"
