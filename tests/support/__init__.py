"""Helpers shared by the tests, the benchmarks and the fuzzers.

Everything here drives the real product (cores, broker, client); nothing stands
in for the code under test.  ``bench/`` and ``fuzz/`` import only from this
package, never from a test module, so the suites depend one way.
"""
