// libFuzzer target: any bytes given to the workflow parser must end in a
// workflow or in located errors, never in a crash, a hang or a leak.

#include "runtime/spec/workflow_loader.hpp"

#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text{reinterpret_cast<const char*>(data), size};
  auto outcome = troupe::runtime::parse_workflow(text);
  // A valid outcome has no errors; an invalid one says why.
  if (outcome.ok() != outcome.errors.empty())
    std::abort();
  for (auto& e : outcome.errors)
    if (e.message.empty() || e.code.empty())
      std::abort();
  return 0;
}
