"""Test helpers shared by several test folders (imported as `helpers.*`: pytest puts tests/ on the path)."""
