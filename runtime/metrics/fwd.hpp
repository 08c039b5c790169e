#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace troupe::runtime::metrics {

enum class metric_type : uint8_t;

class counter;
class gauge;
class histogram;
class registry;
class sample_sink;

template<class Series>
class family;

/// One label: name and value.
using label = std::pair<std::string, std::string>;

/// The labels of one series, e.g. {{"workflow", "w"}, {"kind", "exec"}}.
using label_set = std::vector<label>;

} // namespace troupe::runtime::metrics
