// libFuzzer target: any bytes given to the control protocol's frame decoder
// must end in a JSON object or in an error that says why, never in a crash,
// a hang, a leak or an outsized allocation. What decodes must survive a
// round trip through the encoder unchanged.

#include "runtime/control/wire.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace control = troupe::runtime::control;
  std::string_view body{reinterpret_cast<const char*>(data), size};
  std::string error;
  auto msg = control::decode_body(body, error);
  if (!msg) {
    if (error.empty())
      std::abort();
    return 0;
  }
  if (!error.empty() || !msg->is_object())
    std::abort();
  auto frame = control::encode_frame(*msg);
  auto n = control::read_length(
    reinterpret_cast<const unsigned char*>(frame.data()));
  if (n != frame.size() - control::header_size)
    std::abort();
  auto again = control::decode_body(
    std::string_view{frame}.substr(control::header_size), error);
  if (!again || *again != *msg)
    std::abort();
  return 0;
}
