// Global thread count of the kernels. No Python here.
#pragma once

namespace fastrnn {

// Number of threads the kernels use (>= 1). Default: the environment variable
// FASTRNN_NUM_THREADS if set to a positive integer, else the number of cores.
int get_num_threads();
// Set the thread count; n < 1 restores the default.
void set_num_threads(int n);

}  // namespace fastrnn
