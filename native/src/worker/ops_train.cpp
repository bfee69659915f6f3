// Ops that run the model for many steps: train (runtime/train.h; settings parsed once into TrainParams before the
// dataset is read or the mix is cleared) and sample (runtime/sampler.h). Both run on the job thread.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>

#include "core/errors.h"
#include "core/timing.h"
#include "model_io/dataset.h"
#include "model_io/safetensors.h"
#include "runtime/sampler.h"
#include "runtime/train.h"
#include "runtime/train_params.h"
#include "worker/ops.h"

namespace {

// A fresh file name in /dev/shm (memory-backed where it exists), else /tmp.
std::string temp_output(const std::string& stem) {
    static std::atomic<int> n{0};
    struct stat             sb;
    const std::string       dir = stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
    return dir + "/shira-" + stem + "-" + std::to_string(getpid()) + "-" + std::to_string(n++) + ".safetensors";
}

}  // namespace

Json op_train(WorkerState& st, const Json& args, const EmitFn& emit) {
    DiffusionModel&   model  = need_model(st);
    const TrainParams params = train_params_from_json(args);  // every argument checked before files are read
    const Dataset     data   = dataset_load(params.data, model);
    if (st.mix.active()) mix_clear(model, st.mix);
    st.mix_paths.clear();
    return train_run(model, params, data, st.identity, {[&] { return st.cancel.load(); }, emit});
}

Json op_sample(WorkerState& st, const Json& args, const EmitFn&) {
    DiffusionModel& model = need_model(st);
    SampleParams    p;
    if (args.contains("prompt") && args.at("prompt").is_array()) {
        p.prompts = get_str_list(args, "prompt", {});
    } else {
        p.prompts = {get_str(args, "prompt", "")};
    }
    p.sampler             = str_to_sampler_type(get_str(args, "sampler", "ddim"));
    p.negative_prompt     = get_str(args, "negative_prompt", "");
    p.batch               = get_int(args, "batch", 1, 1, 64);
    p.steps               = get_int(args, "steps", 20, 1, 1000);
    p.guidance            = get_num(args, "guidance", 5.0, 0, 100);
    p.size                = get_int(args, "size", 0, 0, 1024);
    p.seed                = (uint64_t)get_int(args, "seed", 0, 0, INT64_MAX);
    const std::string out = get_str(args, "out", temp_output("sample"));
    const double      t0  = now_ms();
    torch::Tensor     images =
        sample_images(model, noise_schedule_init(model.config.diffusion), p, [&] { return st.cancel.load(); });
    safetensors_save(out, {{"images", images}}, {{"seed", std::to_string(p.seed)}});
    return {{"out", out}, {"shape", images.sizes().vec()}, {"ms", now_ms() - t0}};
}
