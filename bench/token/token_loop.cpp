// kms_token_loop: the token work of one key request in bare PKCS#11 (the module opened with
// dlopen, no hsm/ or tokens/ code), run by N threads for a fixed time. Two loops:
//   naive  what a minimal implementation needs per key request: 2 AES-GCM decrypts under
//          envelope keys held as token objects, then 2 x (derive the media key from the
//          master key, RFC 5649 wrap it under a token-object wrapping key, destroy it);
//   kmsd   kmsd's own call sequence (kmsd_sequence() below: change it there when kmsd's
//          sequence changes; kms_pkcs11_calls_total in kmsd's /metrics is the reference).
// scripts/bench runs both against a token of their own with kmsd's worker thread count and
// compares them with kmsd end to end (docs/BENCHMARKS.md). Prints one JSON line.
#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#ifndef CKM_AES_KEY_WRAP_KWP
#define CKM_AES_KEY_WRAP_KWP 0x0000210BUL
#endif
#ifndef CKM_SP800_108_COUNTER_KDF
#define CKM_SP800_108_COUNTER_KDF 0x000003ACUL
#endif

namespace {

// PKCS#11 3.0 section 2.43 (SP 800-108 counter KDF); p11-kit's header (2.40) lacks it.
struct PrfDataParam {
  CK_ULONG type;
  CK_VOID_PTR value;
  CK_ULONG length;
};
struct CounterFormat {
  CK_BBOOL little_endian;
  CK_ULONG width_bits;
};
struct DkmLengthFormat {
  CK_ULONG method;
  CK_BBOOL little_endian;
  CK_ULONG width_bits;
};
struct Sp800Params {
  CK_MECHANISM_TYPE prf;
  CK_ULONG data_param_count;
  PrfDataParam* data_params;
  CK_ULONG additional_keys;
  void* additional;
};

struct Options {
  std::string module;
  std::string init_reserved;  // NSS softoken's configuration string
  std::string token_label;
  std::string pin_file;
  std::string mode = "naive";
  std::string kdf = "aes-ecb-sha256";  // or sp800-108-cmac
  int threads = 2;
  double seconds = 5;
  long iterations = 0;  // > 0: stop after this many per thread instead
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "kms_token_loop: %s\n", what.c_str());
  std::exit(2);
}

CK_FUNCTION_LIST* p11 = nullptr;
std::atomic<unsigned long> token_calls{0};

void check(CK_RV rv, const char* function) {
  token_calls.fetch_add(1, std::memory_order_relaxed);
  if (rv != CKR_OK) {
    char text[96];
    std::snprintf(text, sizeof text, "%s failed: CK_RV 0x%lx", function, rv);
    die(text);
  }
}

// One attribute template: the same attributes kmsd sets (tokens/key_templates.cpp).
// The attributes point into the template's own vectors: movable (a vector's move keeps its
// buffer), never copied.
struct Template {
  Template() = default;
  Template(Template&&) = default;
  Template(const Template&) = delete;
  Template& operator=(const Template&) = delete;
  std::vector<CK_ATTRIBUTE> attributes;
  std::vector<CK_BBOOL> bools = std::vector<CK_BBOOL>(32);
  std::vector<CK_ULONG> ulongs = std::vector<CK_ULONG>(8);
  std::size_t next_bool = 0, next_ulong = 0;
  Template& flag(CK_ATTRIBUTE_TYPE type, bool value) {
    bools[next_bool] = value ? CK_TRUE : CK_FALSE;
    attributes.push_back({type, &bools[next_bool++], sizeof(CK_BBOOL)});
    return *this;
  }
  Template& number(CK_ATTRIBUTE_TYPE type, CK_ULONG value) {
    ulongs[next_ulong] = value;
    attributes.push_back({type, &ulongs[next_ulong++], sizeof(CK_ULONG)});
    return *this;
  }
  CK_ATTRIBUTE* data() { return attributes.data(); }
  CK_ULONG size() const { return static_cast<CK_ULONG>(attributes.size()); }
};

enum Use : unsigned { kEncrypt = 1, kDecrypt = 2, kDerive = 4, kWrap = 8 };

Template secret_key(CK_KEY_TYPE type, unsigned uses, bool token_object, bool extractable,
                    bool private_object = true) {
  Template t;
  t.number(CKA_CLASS, CKO_SECRET_KEY)
      .number(CKA_KEY_TYPE, type)
      .flag(CKA_TOKEN, token_object)
      .flag(CKA_PRIVATE, private_object)
      .flag(CKA_SENSITIVE, true)
      .flag(CKA_EXTRACTABLE, extractable)
      .flag(CKA_ENCRYPT, (uses & kEncrypt) != 0)
      .flag(CKA_DECRYPT, (uses & kDecrypt) != 0)
      .flag(CKA_DERIVE, (uses & kDerive) != 0)
      .flag(CKA_WRAP, (uses & kWrap) != 0)
      .flag(CKA_UNWRAP, false)
      .flag(CKA_SIGN, false)
      .flag(CKA_VERIFY, false);
  return t;
}

Template derived(CK_KEY_TYPE type, unsigned uses, bool extractable) {
  Template t = secret_key(type, uses, false, extractable);
  t.number(CKA_VALUE_LEN, 32);
  return t;
}

// kmsd's working keys (KE, KR, W, the media keys: tokens::templates, "working_key"): session
// objects with CKA_PRIVATE=FALSE. The naive loop keeps the private ones of derived().
Template working(CK_KEY_TYPE type, unsigned uses, bool extractable) {
  Template t = secret_key(type, uses, false, extractable, false);
  t.number(CKA_VALUE_LEN, 32);
  return t;
}

// extractable_base: NSS softoken derives an extractable key (the media key) only from an
// extractable base; kmsd's master key is then CKA_EXTRACTABLE with CKA_WRAP_WITH_TRUSTED
// (tokens/src/key_templates.cpp).
CK_OBJECT_HANDLE generate(CK_SESSION_HANDLE session, unsigned uses, bool token_object,
                          bool extractable_base = false) {
  Template t = secret_key(CKK_AES, uses, token_object, extractable_base);
  t.number(CKA_VALUE_LEN, 32);
  if (extractable_base) t.flag(CKA_WRAP_WITH_TRUSTED, true);
  CK_MECHANISM mechanism{CKM_AES_KEY_GEN, nullptr, 0};
  CK_OBJECT_HANDLE key = 0;
  check(p11->C_GenerateKey(session, &mechanism, t.data(), t.size(), &key), "C_GenerateKey");
  return key;
}

// The in-token KDF of the deployment's profile (docs/PROTOCOL.md "Profiles"), as
// tokens/src/kdf.cpp calls it: profile 1 hashes label || 0x00 || context in software.
CK_OBJECT_HANDLE derive(CK_SESSION_HANDLE session, bool sp800, CK_OBJECT_HANDLE base,
                        const std::string& label, const std::vector<unsigned char>& context,
                        Template t) {
  CK_OBJECT_HANDLE key = 0;
  if (!sp800) {
    unsigned char digest[32];
    std::vector<unsigned char> input(label.begin(), label.end());
    input.push_back(0x00);
    input.insert(input.end(), context.begin(), context.end());
    if (EVP_Digest(input.data(), input.size(), digest, nullptr, EVP_sha256(), nullptr) != 1) {
      die("SHA-256 failed");
    }
    CK_KEY_DERIVATION_STRING_DATA data{digest, sizeof digest};
    CK_MECHANISM mechanism{CKM_AES_ECB_ENCRYPT_DATA, &data, sizeof data};
    check(p11->C_DeriveKey(session, &mechanism, base, t.data(), t.size(), &key), "C_DeriveKey");
    return key;
  }
  CounterFormat counter{CK_FALSE, 32};
  DkmLengthFormat length{1 /* SUM_OF_KEYS */, CK_FALSE, 32};
  unsigned char separator = 0;
  PrfDataParam params[5] = {{1 /* ITERATION_VARIABLE */, &counter, sizeof counter},
                            {4 /* BYTE_ARRAY */, const_cast<char*>(label.data()), label.size()},
                            {4, &separator, 1},
                            {4, const_cast<unsigned char*>(context.data()), context.size()},
                            {3 /* DKM_LENGTH */, &length, sizeof length}};
  Sp800Params kdf{CKM_AES_CMAC, 5, params, 0, nullptr};
  CK_MECHANISM mechanism{CKM_SP800_108_COUNTER_KDF, &kdf, sizeof kdf};
  check(p11->C_DeriveKey(session, &mechanism, base, t.data(), t.size(), &key), "C_DeriveKey");
  return key;
}

void destroy(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key) {
  check(p11->C_DestroyObject(session, key), "C_DestroyObject");
}

struct Gcm {
  unsigned char iv[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  unsigned char aad[64] = {};
  CK_GCM_PARAMS params{iv, sizeof iv, 96, aad, sizeof aad, 128};
  CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
};

// An envelope's plaintext size: R (32) || lp(ID-A) || lp(ID-B) with ~28-byte identities.
constexpr std::size_t kPlaintextBytes = 92;

std::vector<unsigned char> seal(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key) {
  Gcm gcm;
  std::vector<unsigned char> plain(kPlaintextBytes, 0x5a), sealed(kPlaintextBytes + 16);
  CK_ULONG size = sealed.size();
  check(p11->C_EncryptInit(session, &gcm.mechanism, key), "C_EncryptInit");
  check(p11->C_Encrypt(session, plain.data(), plain.size(), sealed.data(), &size), "C_Encrypt");
  sealed.resize(size);
  return sealed;
}

void open(CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key, std::vector<unsigned char>& sealed) {
  Gcm gcm;
  unsigned char plain[kPlaintextBytes + 16];
  CK_ULONG size = sizeof plain;
  check(p11->C_DecryptInit(session, &gcm.mechanism, key), "C_DecryptInit");
  check(p11->C_Decrypt(session, sealed.data(), sealed.size(), plain, &size), "C_Decrypt");
}

void wrap(CK_SESSION_HANDLE session, CK_MECHANISM_TYPE mechanism_type, CK_OBJECT_HANDLE wrapping,
          CK_OBJECT_HANDLE key) {
  CK_MECHANISM mechanism{mechanism_type, nullptr, 0};
  unsigned char out[512];  // one call, no size query (hsm::Session::wrap_key does the same)
  CK_ULONG size = sizeof out;
  check(p11->C_WrapKey(session, &mechanism, wrapping, key, out, &size), "C_WrapKey");
  if (size != 40) die("wrap did not give 40 bytes");
}

// The keys both loops use, made once on the setup session.
struct Keys {
  bool sp800 = false;
  CK_MECHANISM_TYPE wrap_mechanism = CKM_AES_KEY_WRAP_PAD;
  CK_OBJECT_HANDLE master = 0;  // token object, CKA_DERIVE (kms/master)
  // naive: envelope and wrapping keys as token objects
  CK_OBJECT_HANDLE envelope_a = 0, envelope_b = 0, wrapping_a = 0, wrapping_b = 0;
  // kmsd: what a key-store cache hit holds: root keys (session objects, destroyed by kmsd
  // once KE and KR exist; kept here only to derive them) and per subscriber KE_X
  // (CKA_DECRYPT) and KR_X (CKA_DERIVE), session objects derived once
  CK_OBJECT_HANDLE root_a = 0, root_b = 0;
  CK_OBJECT_HANDLE envelope_key_a = 0, envelope_key_b = 0, response_key_a = 0, response_key_b = 0;
  std::vector<unsigned char> sealed_a, sealed_b;            // under envelope_a/_b
  std::vector<unsigned char> kmsd_sealed_a, kmsd_sealed_b;  // under KE derived from root_a/_b
  // kmsd: the current conference's kept K1 and the requests made so far (per thread)
  CK_OBJECT_HANDLE chair_media = 0;
  long requests = 0;
};

const std::vector<unsigned char> kContextA(40, 0xa1), kContextB(40, 0xb2);
const std::vector<unsigned char> kMediaContext(60, 0x3c), kWrapContext(110, 0x7e);

// The naive loop: 2 decrypts + 2 x (derive, wrap, destroy), all keys token objects.
void naive_sequence(CK_SESSION_HANDLE session, Keys& keys) {
  open(session, keys.envelope_a, keys.sealed_a);
  open(session, keys.envelope_b, keys.sealed_b);
  for (CK_OBJECT_HANDLE wrapping : {keys.wrapping_a, keys.wrapping_b}) {
    const CK_OBJECT_HANDLE media = derive(session, keys.sp800, keys.master, "media", kMediaContext,
                                          derived(CKK_GENERIC_SECRET, 0, true));
    wrap(session, keys.wrap_mechanism, wrapping, media);
    destroy(session, media);
  }
}

// kmsd's sequence for one key request (kms/core/src/key_request_service.cpp, as of this
// commit): the pool's session check, per party derive KE + GCM decrypt + destroy, then per
// party derive K (from M), KR (from K_X), W (from KR), wrap K under W, destroy W, KR, K.
// Root keys are cache hits (no token call). Edit this function when kmsd's changes.
// Invitations per conference in scripts/bench's realistic load (3 to 10 members: 5.5 on
// average): the chair's K1 is derived once per conference.
constexpr long kInvitationsPerConference = 5;

void kmsd_sequence(CK_SESSION_HANDLE session, Keys& keys) {
  // kmsd since the key store keeps KE_X and KR_X and the media-key cache keeps K1 and each K
  // (docs/ARCHITECTURE.md "Token calls per key request"): 2 x (C_DecryptInit + C_Decrypt)
  // with the kept KE; the invitee's K derived from M and kept (destroyed once, when the
  // cache evicts it: counted here); K1 derived once per conference; per party W derived from
  // the kept KR, wrap, destroy W. No C_GetSessionInfo (the pool trusts a session given back
  // less than 1 s ago). M is the token object, as on SoftHSM (NSS: kmsd uses a
  // session-object copy). KE, KR, W and the media keys are public session objects, as
  // kmsd's. The bridge's release is not part of a key request (it finds every K kept).
  open(session, keys.envelope_key_a, keys.kmsd_sealed_a);
  open(session, keys.envelope_key_b, keys.kmsd_sealed_b);
  const bool new_conference = keys.requests++ % kInvitationsPerConference == 0;
  if (new_conference) {
    keys.chair_media = derive(session, keys.sp800, keys.master, "media", kMediaContext,
                              working(CKK_GENERIC_SECRET, 0, true));
  }
  const CK_OBJECT_HANDLE member_media = derive(session, keys.sp800, keys.master, "media",
                                               kMediaContext, working(CKK_GENERIC_SECRET, 0, true));
  for (auto [response, media] : {std::pair{keys.response_key_a, keys.chair_media},
                                 std::pair{keys.response_key_b, member_media}}) {
    const CK_OBJECT_HANDLE wrapping = derive(session, keys.sp800, response, "response-wrap",
                                             kWrapContext, working(CKK_AES, kWrap, false));
    wrap(session, keys.wrap_mechanism, wrapping, media);
    destroy(session, wrapping);
  }
  destroy(session, member_media);
  // The previous conference's K1 goes when the next one begins (the cache's eviction).
  if (keys.requests % kInvitationsPerConference == 0) destroy(session, keys.chair_media);
}

Keys make_keys(CK_SESSION_HANDLE session, CK_SLOT_ID slot, const Options& options) {
  Keys keys;
  keys.sp800 = options.kdf == "sp800-108-cmac";
  CK_MECHANISM_INFO info;
  if (p11->C_GetMechanismInfo(slot, CKM_AES_KEY_WRAP_KWP, &info) == CKR_OK) {
    keys.wrap_mechanism = CKM_AES_KEY_WRAP_KWP;
  }
  keys.master = generate(session, kDerive, true, keys.sp800);
  keys.envelope_a = generate(session, kEncrypt | kDecrypt, true);
  keys.envelope_b = generate(session, kEncrypt | kDecrypt, true);
  keys.wrapping_a = generate(session, kWrap, true);
  keys.wrapping_b = generate(session, kWrap, true);
  keys.sealed_a = seal(session, keys.envelope_a);
  keys.sealed_b = seal(session, keys.envelope_b);
  keys.root_a = generate(session, kDerive, false);
  keys.root_b = generate(session, kDerive, false);
  // The KDF is deterministic: an encrypting copy of KE seals what the loop's KE opens.
  for (auto [root, context, out] : {std::tuple{keys.root_a, &kContextA, &keys.kmsd_sealed_a},
                                    std::tuple{keys.root_b, &kContextB, &keys.kmsd_sealed_b}}) {
    const CK_OBJECT_HANDLE sealer = derive(session, keys.sp800, root, "envelope", *context,
                                           derived(CKK_AES, kEncrypt | kDecrypt, false));
    *out = seal(session, sealer);
    destroy(session, sealer);
  }
  keys.envelope_key_a = derive(session, keys.sp800, keys.root_a, "envelope", kContextA,
                               working(CKK_AES, kDecrypt, false));
  keys.envelope_key_b = derive(session, keys.sp800, keys.root_b, "envelope", kContextB,
                               working(CKK_AES, kDecrypt, false));
  keys.response_key_a = derive(session, keys.sp800, keys.root_a, "response", kContextA,
                               working(CKK_AES, kDerive, false));
  keys.response_key_b = derive(session, keys.sp800, keys.root_b, "response", kContextB,
                               working(CKK_AES, kDerive, false));
  return keys;
}

void destroy_token_objects(CK_SESSION_HANDLE session, const Keys& keys) {
  for (CK_OBJECT_HANDLE key :
       {keys.master, keys.envelope_a, keys.envelope_b, keys.wrapping_a, keys.wrapping_b}) {
    p11->C_DestroyObject(session, key);
  }
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::printf(
          "usage: kms_token_loop --module SO --token-label LABEL --pin-file FILE\n"
          "         [--init-reserved STR] [--mode naive|kmsd] [--kdf "
          "aes-ecb-sha256|sp800-108-cmac]\n"
          "         [--threads N] [--seconds S | --iterations N]\n"
          "Runs one key request's token work in a loop on N threads (one session each) and\n"
          "prints {mode, threads, requests, seconds, requests_per_s, p50_us, p95_us, p99_us,\n"
          "cpu_us_per_request, token_calls_per_request} as one JSON line. Makes token objects\n"
          "in the token (destroyed at the end): give it a token of its own.\n");
      std::exit(0);
    }
    if (i + 1 >= argc) die("option " + arg + " needs a value (see --help)");
    const std::string value = argv[++i];
    if (arg == "--module")
      o.module = value;
    else if (arg == "--init-reserved")
      o.init_reserved = value;
    else if (arg == "--token-label")
      o.token_label = value;
    else if (arg == "--pin-file")
      o.pin_file = value;
    else if (arg == "--mode")
      o.mode = value;
    else if (arg == "--kdf")
      o.kdf = value;
    else if (arg == "--threads")
      o.threads = std::atoi(value.c_str());
    else if (arg == "--seconds")
      o.seconds = std::atof(value.c_str());
    else if (arg == "--iterations")
      o.iterations = std::atol(value.c_str());
    else
      die("unknown option " + arg + " (see --help)");
  }
  if (o.module.empty() || o.token_label.empty() || o.pin_file.empty()) {
    die("--module, --token-label and --pin-file are required (see --help)");
  }
  if (o.mode != "naive" && o.mode != "kmsd") die("--mode must be naive or kmsd");
  if (o.kdf != "aes-ecb-sha256" && o.kdf != "sp800-108-cmac") {
    die("--kdf must be aes-ecb-sha256 or sp800-108-cmac");
  }
  if (o.threads < 1 || o.threads > 256) die("--threads must be 1..256");
  return o;
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  const auto seconds = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  std::string pin;
  std::ifstream(options.pin_file) >> pin;
  if (pin.empty()) die("empty PIN file " + options.pin_file);

  void* module = dlopen(options.module.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (module == nullptr) die(std::string("dlopen: ") + dlerror());
  auto* get_function_list =
      reinterpret_cast<CK_C_GetFunctionList>(dlsym(module, "C_GetFunctionList"));
  if (get_function_list == nullptr) die("no C_GetFunctionList in " + options.module);
  check(get_function_list(&p11), "C_GetFunctionList");
  CK_C_INITIALIZE_ARGS init{};
  init.flags = CKF_OS_LOCKING_OK;
  std::string reserved = options.init_reserved;
  if (!reserved.empty()) init.pReserved = reserved.data();
  check(p11->C_Initialize(&init), "C_Initialize");

  CK_ULONG slot_count = 0;
  check(p11->C_GetSlotList(CK_TRUE, nullptr, &slot_count), "C_GetSlotList");
  std::vector<CK_SLOT_ID> slots(slot_count);
  check(p11->C_GetSlotList(CK_TRUE, slots.data(), &slot_count), "C_GetSlotList");
  std::optional<CK_SLOT_ID> slot;
  for (CK_ULONG i = 0; i < slot_count && !slot; ++i) {
    CK_TOKEN_INFO info;
    if (p11->C_GetTokenInfo(slots[i], &info) != CKR_OK) continue;
    std::string label(reinterpret_cast<const char*>(info.label), sizeof info.label);
    label.erase(label.find_last_not_of(' ') + 1);
    if (label == options.token_label) slot = slots[i];
  }
  if (!slot) die("no token labelled '" + options.token_label + "'");

  const CK_FLAGS flags = CKF_SERIAL_SESSION | CKF_RW_SESSION;
  CK_SESSION_HANDLE setup = 0;
  check(p11->C_OpenSession(*slot, flags, nullptr, nullptr, &setup), "C_OpenSession");
  CK_RV login = p11->C_Login(setup, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin.data()),
                             static_cast<CK_ULONG>(pin.size()));
  if (login != CKR_OK && login != CKR_USER_ALREADY_LOGGED_IN) check(login, "C_Login");
  Keys keys = make_keys(setup, *slot, options);

  std::vector<CK_SESSION_HANDLE> sessions(static_cast<std::size_t>(options.threads));
  for (auto& session : sessions) {
    check(p11->C_OpenSession(*slot, flags, nullptr, nullptr, &session), "C_OpenSession");
  }
  const auto sequence = options.mode == "naive" ? naive_sequence : kmsd_sequence;
  // Calls per request, counted on the setup session before the timed loop: the average over
  // one conference's requests (kmsd's sequence derives K1 once per conference).
  const unsigned long before_count = token_calls.load();
  for (long i = 0; i < kInvitationsPerConference; ++i) sequence(setup, keys);
  const double calls_per_request =
      static_cast<double>(token_calls.load() - before_count) / kInvitationsPerConference;

  using Clock = std::chrono::steady_clock;
  std::vector<std::vector<double>> latencies(sessions.size());
  const double cpu_before = cpu_seconds();
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(options.seconds);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < sessions.size(); ++t) {
    threads.emplace_back([&, t] {
      Keys local = keys;  // own copies of the sealed buffers
      for (long n = 0;; ++n) {
        if (options.iterations > 0 ? n >= options.iterations : Clock::now() >= deadline) break;
        const auto begin = Clock::now();
        sequence(sessions[t], local);
        latencies[t].push_back(
            std::chrono::duration<double, std::micro>(Clock::now() - begin).count());
      }
    });
  }
  for (auto& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  const double cpu = cpu_seconds() - cpu_before;

  std::vector<double> all;
  for (const auto& list : latencies) all.insert(all.end(), list.begin(), list.end());
  std::sort(all.begin(), all.end());
  const auto percentile = [&](double p) {
    return all.empty() ? 0.0
                       : all[static_cast<std::size_t>(p * static_cast<double>(all.size() - 1))];
  };
  const double requests = static_cast<double>(all.size());
  std::printf(
      "{\"mode\":\"%s\",\"kdf\":\"%s\",\"threads\":%d,\"requests\":%zu,\"seconds\":%.3f,"
      "\"requests_per_s\":%.1f,\"p50_us\":%.1f,\"p95_us\":%.1f,\"p99_us\":%.1f,"
      "\"cpu_us_per_request\":%.1f,\"token_calls_per_request\":%.1f}\n",
      options.mode.c_str(), options.kdf.c_str(), options.threads, all.size(), seconds,
      seconds > 0 ? requests / seconds : 0.0, percentile(0.50), percentile(0.95), percentile(0.99),
      requests > 0 ? cpu * 1e6 / requests : 0.0, calls_per_request);

  for (auto session : sessions) p11->C_CloseSession(session);
  destroy_token_objects(setup, keys);
  p11->C_CloseSession(setup);
  p11->C_Finalize(nullptr);
  OPENSSL_cleanse(pin.data(), pin.size());
  return all.empty() ? 1 : 0;
}
