// Model config from and to JSON (config.h), validated field by field.
#include "model/config.h"

#include "core/errors.h"

using json = nlohmann::json;

namespace {

template <typename T>
T get_or(const json& j, const char* key, T fallback) {
    if (!j.contains(key)) return fallback;
    try {
        return j.at(key).get<T>();
    } catch (const std::exception&) {
        throw_bad_input(std::string("model config: field '") + key + "' has the wrong type");
    }
}

void check(bool ok, const std::string& message) {
    if (!ok) throw_bad_input("model config: " + message);
}

}  // namespace

ModelConfig model_config_from_json(const json& j) {
    check(j.is_object(), "must be a JSON object");
    ModelConfig c;
    c.name          = get_or<std::string>(j, "name", c.name);
    const json unet = j.value("unet", json::object());
    const json text = j.value("text_encoder", json::object());
    const json diff = j.value("diffusion", json::object());
    check(unet.is_object() && text.is_object() && diff.is_object(), "unet/text_encoder/diffusion must be objects");

    UNetConfig& u           = c.unet;
    u.sample_size           = get_or(unet, "sample_size", u.sample_size);
    u.in_channels           = get_or(unet, "in_channels", u.in_channels);
    u.out_channels          = get_or(unet, "out_channels", u.out_channels);
    u.block_out_channels    = get_or(unet, "block_out_channels", u.block_out_channels);
    u.attention             = get_or(unet, "attention", std::vector<bool>(u.block_out_channels.size(), true));
    u.layers_per_block      = get_or(unet, "layers_per_block", u.layers_per_block);
    u.attention_heads       = get_or(unet, "attention_heads", u.attention_heads);
    u.norm_num_groups       = get_or(unet, "norm_num_groups", u.norm_num_groups);
    u.use_linear_projection = get_or(unet, "use_linear_projection", u.use_linear_projection);
    u.patch_size            = get_or(unet, "patch_size", u.patch_size);
    const size_t levels     = u.block_out_channels.size();
    check(levels >= 1 && levels <= 6, "unet.block_out_channels needs 1..6 entries");
    check(u.attention.size() == levels, "unet.attention must have one entry per block_out_channels entry");
    check(u.layers_per_block >= 1 && u.layers_per_block <= 8, "unet.layers_per_block must be in 1..8");
    check(u.in_channels >= 1 && u.out_channels >= 1, "unet channels must be positive");
    check(u.norm_num_groups >= 1, "unet.norm_num_groups must be positive");
    for (int64_t ch : u.block_out_channels) {
        check(ch > 0 && ch % u.norm_num_groups == 0,
              "every block_out_channels entry must be a multiple of norm_num_groups");
        check(ch % u.attention_heads == 0, "every block_out_channels entry must be a multiple of attention_heads");
    }
    check(u.patch_size >= 1 && u.patch_size <= 8, "unet.patch_size must be in 1..8");
    const int64_t down = (1ll << (levels - 1)) * u.patch_size;
    check(u.sample_size >= down && u.sample_size % down == 0,
          "unet.sample_size must be a multiple of patch_size * 2^(levels-1) = " + std::to_string(down));

    TextConfig& t   = c.text;
    t.vocab         = get_or(text, "vocab", t.vocab);
    t.width         = get_or(text, "width", t.width);
    t.layers        = get_or(text, "layers", t.layers);
    t.heads         = get_or(text, "heads", t.heads);
    t.max_length    = get_or(text, "max_length", t.max_length);
    t.spare_buckets = get_or(text, "spare_buckets", t.spare_buckets);
    check(t.spare_buckets >= 0 && t.spare_buckets <= 65536, "text_encoder.spare_buckets must be in 0..65536");
    check(t.width > 0 && t.heads > 0 && t.width % t.heads == 0, "text_encoder.width must be a multiple of heads");
    check(t.layers >= 0 && t.layers <= 24, "text_encoder.layers must be in 0..24");
    check(t.max_length >= 2 && t.max_length <= 512, "text_encoder.max_length must be in 2..512");

    DiffusionConfig& d           = c.diffusion;
    d.num_train_timesteps        = get_or(diff, "num_train_timesteps", d.num_train_timesteps);
    d.beta_start                 = get_or(diff, "beta_start", d.beta_start);
    d.beta_end                   = get_or(diff, "beta_end", d.beta_end);
    d.beta_schedule              = get_or(diff, "beta_schedule", d.beta_schedule);
    const std::string prediction = get_or<std::string>(diff, "prediction_type", "epsilon");
    check(prediction == "epsilon" || prediction == "v_prediction",
          "diffusion.prediction_type must be 'epsilon' or 'v_prediction'");
    d.prediction_type = prediction == "epsilon" ? PREDICTION_TYPE_EPSILON : PREDICTION_TYPE_V;
    d.sigma_data      = get_or(diff, "sigma_data", d.sigma_data);
    check(d.sigma_data > 0 && d.sigma_data <= 10, "diffusion.sigma_data must be in (0, 10]");
    check(d.sigma_data == 1.0 || d.prediction_type == PREDICTION_TYPE_V,
          "diffusion.sigma_data applies to prediction_type 'v_prediction' only");
    check(d.beta_schedule == "scaled_linear" || d.beta_schedule == "linear",
          "diffusion.beta_schedule must be 'scaled_linear' or 'linear'");
    check(d.num_train_timesteps >= 2 && d.num_train_timesteps <= 100000, "diffusion.num_train_timesteps out of range");
    check(d.beta_start > 0 && d.beta_end < 1 && d.beta_start < d.beta_end,
          "diffusion betas must satisfy 0<start<end<1");
    return c;
}

json model_config_to_json(const ModelConfig& c) {
    return {{"name", c.name},
            {"unet",
             {{"sample_size", c.unet.sample_size},
              {"in_channels", c.unet.in_channels},
              {"out_channels", c.unet.out_channels},
              {"block_out_channels", c.unet.block_out_channels},
              {"attention", c.unet.attention},
              {"layers_per_block", c.unet.layers_per_block},
              {"attention_heads", c.unet.attention_heads},
              {"norm_num_groups", c.unet.norm_num_groups},
              {"use_linear_projection", c.unet.use_linear_projection},
              {"patch_size", c.unet.patch_size}}},
            {"text_encoder",
             {{"vocab", c.text.vocab},
              {"width", c.text.width},
              {"layers", c.text.layers},
              {"heads", c.text.heads},
              {"max_length", c.text.max_length},
              {"spare_buckets", c.text.spare_buckets}}},
            {"diffusion",
             {{"num_train_timesteps", c.diffusion.num_train_timesteps},
              {"beta_start", c.diffusion.beta_start},
              {"beta_end", c.diffusion.beta_end},
              {"beta_schedule", c.diffusion.beta_schedule},
              {"prediction_type", c.diffusion.prediction_type == PREDICTION_TYPE_EPSILON ? "epsilon" : "v_prediction"},
              {"sigma_data", c.diffusion.sigma_data}}}};
}
