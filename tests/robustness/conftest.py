"""Tests of robustness/: Bad input, fuzzing, crash/resume and security across the whole
package."""
