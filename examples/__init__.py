"""Example trade files and programs, shipped in the wheel as `protocols.examples`.

`dvp examples DIR` copies them into DIR, so a user who installed the
package can replay one without the source tree.
"""
