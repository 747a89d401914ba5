#pragma once
// Small timing helpers shared by the measuring commands (lut, bench).
#include <vector>

namespace llmc {

// CPU seconds used by the calling thread. With one worker thread this is the wall time an unshared
// core would show, however busy the machine is (other processes preempting us do not count).
double thread_cpu_seconds();

// Median of the values (the mean of the middle two for an even count); 0 for none.
double median(std::vector<double> v);

// The q-quantile (0 <= q <= 1) of the values, interpolating linearly between the two nearest order
// statistics (numpy's default; quantile(v, 0.5) == median(v)); 0 for none.
double quantile(std::vector<double> v, double q);

}  // namespace llmc
