// Adapter bookkeeping (adapter.h): process-unique uids (mixing tracks what is applied per layer by uid), sizes,
// and the values-dtype argument.
#include "adapter/adapter.h"

#include <atomic>

#include "core/errors.h"
#include "core/json_args.h"

namespace {
uint64_t next_adapter_uid() {
    static std::atomic<uint64_t> counter{0};
    return ++counter;
}
}  // namespace

Adapter::Adapter() : uid(next_adapter_uid()) {}

Adapter::Adapter(const Adapter& o)
    : kind(o.kind),
      shira(o.shira),
      lora(o.lora),
      metadata(o.metadata),
      format_version(o.format_version),
      storage(o.storage),
      uid(next_adapter_uid()) {}

Adapter& Adapter::operator=(const Adapter& o) {
    if (this == &o) return *this;
    kind           = o.kind;
    shira          = o.shira;
    lora           = o.lora;
    metadata       = o.metadata;
    format_version = o.format_version;
    storage        = o.storage;
    uid            = next_adapter_uid();
    return *this;
}

int64_t Adapter::trainable() const {
    int64_t n = 0;
    for (const auto& [_, t] : shira) n += t.values.numel();
    for (const auto& [_, t] : lora) n += t.A.numel() + t.B.numel();
    return n;
}

int64_t Adapter::decoded_bytes() const {
    int64_t n = 0;
    for (const auto& [_, t] : shira) n += t.idx.nbytes() + t.values.nbytes();
    for (const auto& [_, t] : lora) n += t.A.nbytes() + t.B.nbytes();
    return n;
}

std::string Adapter::base_identity() const {
    auto it = metadata.find("base_identity");
    return it == metadata.end() ? "" : it->second;
}

ValuesDtype str_to_values_dtype(const std::string& name) {
    if (name == "f16") return VALUES_DTYPE_F16;
    if (name == "f32") return VALUES_DTYPE_F32;
    throw_bad_input("values dtype must be 'f16' or 'f32', not '" + name + "'");
}

ValuesDtype get_values_dtype(const Json& args, const char* key) {
    const std::string v = get_str(args, key, "f16");
    if (v != "f16" && v != "f32")
        throw_bad_input(std::string("argument '") + key + "' must be \"f16\" or \"f32\", not '" + v + "'");
    return str_to_values_dtype(v);
}
